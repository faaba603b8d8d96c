"""The rules from an input's arrival to a local file (pure, part of `core.step`): a document,
a URL, a local path or a BatchJob `file_id` starts a pending input; the file is fetched
(again, from its source, when a replica lacks it), read once more after a restart at most
`MAX_INSPECTIONS` times, and when it cannot be had the user is asked for another way in."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from conversation.choices import parse_choice
from conversation.events import (
    Button,
    Cleanup,
    Download,
    Effect,
    FetchUrl,
    FileMissing,
    FileReady,
    FileReceived,
    Inspect,
    InspectResumed,
    LookupRows,
    OpenPath,
    Precheck,
    Reply,
    RerunFailed,
    ResolveFailed,
    RowsKnown,
)
from conversation.flow_ops import drop, new_pending, reply
from conversation.state import ChatState, Pending

if TYPE_CHECKING:
    from conversation.core import Context, Result

FILE_ID = re.compile(r"^file[_-][A-Za-z0-9_-]{4,128}$")


def start_input(
    s: ChatState, ctx: Context, effect: Effect, filename: str, caption: str | None, user: str = ""
) -> Result:
    out: list[Effect] = []
    if s.phase in ("submitting", "reconciling"):
        return s, [reply("flow.busy_submitting")]
    if s.pending is not None:
        s, out = drop(s, "flow.replaced")
    p = new_pending(ctx, filename)
    p.owner = user
    if caption:
        model, mode, _confirm, estimate = parse_choice(caption, ctx.modes)
        if model:
            p.model = model
        if mode:
            p.mode = mode
        p.model_given = bool(model or mode)
        p.estimate_only = estimate
    p.source_kind, p.source_ref = source_of(effect)
    s.pending = p
    s.phase = "resolving"
    return s, [*out, effect]


def source_of(effect: Effect) -> tuple[str, str]:
    match effect:
        case Download(ref=ref):
            return "channel", ref
        case FetchUrl(url=url):
            return "url", url
        case OpenPath(path=path):
            return "path", path
        case RerunFailed(job_id=job_id):
            return "rerun", job_id
    return "", ""


def source_effect(p: Pending) -> Effect | None:
    """The effect that gets the pending input again from where it came from."""
    if p.source_kind == "rerun":
        return RerunFailed(p.source_ref)
    if p.source_kind == "channel":
        return Download(p.source_ref, p.filename)
    if p.source_kind == "url":
        return FetchUrl(p.source_ref)
    if p.source_kind == "path":
        return OpenPath(p.source_ref)
    return None


def fallback(s: ChatState, ctx: Context, reason: str) -> Result:
    if s.pending is None:
        s.pending = new_pending(ctx)
    s.phase = "awaiting_input"
    parts: list[tuple[str, dict[str, Any]]] = [
        (f"fallback.reason.{reason}", {}),
        ("fallback.ask", {}),
        ("fallback.url", {}),
        ("fallback.file_id", {}),
    ]
    if ctx.allow_local_paths:
        parts.append(("fallback.path", {}))
    parts.append(("fallback.drop", {}))
    return s, [Reply(tuple(parts), ((Button("btn.drop", f"c:drop:{s.pending.token}"),),))]


def is_url(text: str) -> bool:
    return bool(re.match(r"^https?://\S+$", text, re.I))


def as_path(text: str) -> str | None:
    if text.startswith("MEDIA:"):
        return text[len("MEDIA:") :].strip() or None
    if text.startswith("/") and not text.startswith("//") and "\n" not in text:
        return text
    return None


def on_file(s: ChatState, e: FileReceived, ctx: Context) -> Result:
    if e.too_large:
        s, out = start_input(s, ctx, Download(e.ref, e.filename), e.filename, e.caption, e.user_id)
        if s.phase != "resolving":
            return s, out
        s, more = fallback(s, ctx, "too_large")
        return s, [x for x in out if not isinstance(x, Download)] + more
    return start_input(s, ctx, Download(e.ref, e.filename), e.filename, e.caption, e.user_id)


def on_ready(s: ChatState, e: FileReady, ctx: Context) -> Result:
    if s.phase not in ("resolving", "awaiting_input") or s.pending is None:
        return s, [Cleanup((e.path,))]
    s.pending.path = e.path
    s.pending.filename = e.filename or s.pending.filename
    s.phase = "inspecting"
    s.pending.inspections += 1
    return s, [Inspect(e.path, s.pending.filename)]


def on_file_missing(s: ChatState, e: FileMissing, ctx: Context) -> Result:
    """Shared-nothing media: a replica without the file gets it again from its source, then
    takes the same path as the replica that had it (re-reading is deterministic)."""
    expected = {"inspect": "inspecting", "upload": "uploading"}.get(e.step)
    p = s.pending
    if s.phase != expected or p is None:
        return s, []
    again = source_effect(p)
    if again is None:
        return drop(s, "flow.file_lost", filename=p.filename[:80] or "?")
    p.path = p.converted = None
    p.refetched = p.refetched or e.step == "upload"
    s.phase = "resolving"
    return s, [again]


MAX_INSPECTIONS = 2


def on_inspect_resumed(s: ChatState, e: InspectResumed, ctx: Context) -> Result:
    """A reading cut short (the bot was killed) is tried again, once: a file that takes the
    bot down every time must not do so at every start."""
    p = s.pending
    if s.phase != "inspecting" or p is None or not p.path:
        return s, []
    if p.inspections >= MAX_INSPECTIONS:
        return drop(s, "flow.inspect_abandoned", filename=p.filename[:80] or "?")
    p.inspections += 1
    return s, [Inspect(p.path, p.filename)]


def on_resolve_failed(s: ChatState, e: ResolveFailed, ctx: Context) -> Result:
    if s.phase not in ("resolving", "awaiting_input"):
        return s, []
    if s.pending is not None and s.pending.source_kind == "rerun":
        return drop(s, f"rerun.{e.reason}")  # nothing to ask: the original is the bot's own record
    return fallback(s, ctx, e.reason)


def on_input_text(s: ChatState, text: str, ctx: Context) -> Result:
    if is_url(text):
        return start_input_keep(s, ctx, FetchUrl(text), text.rsplit("/", 1)[-1][:100])
    if FILE_ID.match(text):
        if s.phase in ("submitting", "reconciling"):
            return s, [reply("flow.busy_submitting")]
        if s.pending is None:
            s.pending = new_pending(ctx)
        s.pending.file_id = text
        s.pending.path = s.pending.converted = None
        s.phase = "awaiting_count"
        # A file this bot uploaded has its record count in Redis; otherwise the user is asked.
        return s, [LookupRows(text)]
    path = as_path(text)
    if path is not None:
        if not ctx.allow_local_paths:
            return s, [reply("fallback.path_disabled")]
        return start_input_keep(s, ctx, OpenPath(path), path.rsplit("/", 1)[-1][:100])
    if s.phase == "awaiting_input":
        return s, [reply("fallback.not_understood")]
    return s, [reply("flow.idle_hint")]


def start_input_keep(s: ChatState, ctx: Context, effect: Effect, filename: str) -> Result:
    """A URL or path: keep an awaiting_input pending (its caption choices), else start anew."""
    if s.phase == "awaiting_input" and s.pending is not None:
        s.pending.filename = filename
        s.pending.source_kind, s.pending.source_ref = source_of(effect)
        s.phase = "resolving"
        return s, [effect]
    return start_input(s, ctx, effect, filename, None)


def on_rows_known(s: ChatState, e: RowsKnown, ctx: Context) -> Result:
    if s.phase != "awaiting_count" or s.pending is None or s.pending.file_id != e.file_id:
        return s, []
    if e.count is None or e.count <= 0:
        # Nobody knows how many records it holds; the user would have to guess (and a wrong
        # number makes a wrong estimate): the file itself is asked for instead.
        return drop(s, "flow.file_id_count_unknown", file_id=e.file_id)
    s.pending.row_count = e.count
    s.pending.count_source = "flow.count_from_job" if e.source == "job" else "flow.count_from_bot"
    s.pending.count_job = e.job_id
    s.phase = "prechecking"
    return s, [Precheck(e.count, s.pending.model, s.pending.mode)]
