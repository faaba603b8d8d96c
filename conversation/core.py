"""The rules of a chat, in one place: `step(state, event, ctx) -> (state, effects)`.

Theory of operation
-------------------
A chat has at most one *pending input* (a file on its way to becoming a job) and any
number of *active jobs* (watched elsewhere, by the watcher). `step` is a pure function:
it reads the state and one event, and returns the next state plus a list of effects for
the runner to perform (send a message, download, inspect, upload, precheck, submit, ...).
The runner persists the new state *before* performing the effects, and feeds each
effect's outcome back as a new event. No awaits, no Redis, no HTTP here: every flow can
be tested as a table of (phase, event) -> (phase, effects). The rules of a stretch of the
flow live beside this module: `resolving` (an input to a local file), `estimating` (its
reading to the question to confirm), `choices`, `spending_rules`, `job_commands`.

The pending input moves through phases:

    idle ─file/url/file_id─► resolving ─► inspecting ─┬─► uploading ─► prechecking ─► awaiting_confirm
                 ▲                                     └─► awaiting_fix (invalid rows) ─┘        │
                 │          awaiting_input (fallback: URL / file_id / path) ◄── resolve failed   │
                 └──────── submitting ◄─ "model mode" reply, caption, or confirm button ─────────┘

Guardrails (the service's usage rules): a job is submitted only from awaiting_confirm on
the user's explicit word (or a caption naming model/mode), once: a submit intent id is
minted at that moment and the runner records it before the POST; a failed or unknown
submit is never repeated here (an unknown one is reconciled by listing the service's
jobs). An upload failure ends the run. Nothing is submitted with zero records. "Estimate
only" stops after the precheck. Output summaries are fetched only on /details.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batchjob import format_amount
from conversation import (
    agent_input,
    choices,
    estimating,
    flow_ops,
    identity,
    job_commands,
    resolving,
    spending_rules,
)
from conversation.choices import parse_choice
from conversation.events import (
    Adopted,
    ButtonPressed,
    CommandReceived,
    Effect,
    EffectFailed,
    Event,
    Expired,
    FileMissing,
    FileReady,
    FileReceived,
    InputGiven,
    Inspected,
    InspectResumed,
    Prechecked,
    Reconcile,
    Reconciled,
    Reply,
    RerunFailed,
    ResolveFailed,
    RowsKnown,
    SendTemplates,
    ServiceFailed,
    Submitted,
    TextReceived,
    Upload,
    Uploaded,
    Watch,
    Whoami,
)
from conversation.prompts import again
from conversation.prompts import ask_confirm as _ask_confirm
from conversation.prompts import error_reply as _error_reply
from conversation.prompts import estimate_parts as _estimate_parts
from conversation.spending_events import ApprovalDecided, ApprovalNeeded, OverBudget
from conversation.state import ChatState, Pending

REFUSALS = frozenset({"auth", "balance", "validation", "not_found", "conflict"})


@dataclass(frozen=True)
class Context:
    """Everything impure that a decision needs, given as values."""

    now_ms: int
    new_id: str  # fresh random id (pending token, intent id)
    allow_local_paths: bool = False
    pending_ttl_ms: int = 3_600_000
    admins: frozenset[str] = field(default_factory=frozenset)
    modes: tuple[str, ...] = ("fast", "standard", "batch")  # the first is the default

    def __post_init__(self) -> None:
        object.__setattr__(self, "admins", identity.qualify_all(self.admins))


Result = tuple[ChatState, list[Effect]]


def step(state: ChatState, event: Event, ctx: Context) -> Result:
    """The next state and the effects of `event`; `state` is left as it was."""
    # A copy through the state's stored form: what is saved is what was stepped, and it
    # costs a third of a deep copy (14 us against 37).
    return advance(ChatState.model_validate_json(state.model_dump_json()), event, ctx)


def advance(s: ChatState, event: Event, ctx: Context) -> Result:
    """`step` for a caller that hands `s` over (it was just read from the store, and is not
    used again): it is changed in place, without a copy."""
    if (
        s.pending is not None
        and ctx.now_ms - s.pending.created_ms > ctx.pending_ttl_ms
        and s.phase
        not in (
            "submitting",
            "reconciling",
            "awaiting_approval",  # its own time limit (the approval's) applies
        )
    ):
        s, out = _drop(s, "flow.expired")
        if isinstance(event, Expired):
            return s, out
        s2, more = advance(s, event, ctx)
        return s2, out + more
    handler = _HANDLERS.get(type(event))
    if handler is None:
        return s, []
    return handler(s, event, ctx)


# --- helpers -------------------------------------------------------------------------------


_reply = flow_ops.reply
_drop = flow_ops.drop
_new_pending = flow_ops.new_pending
_submit = flow_ops.submit


# --- handlers --------------------------------------------------------------------------------


def _on_submitted(s: ChatState, e: Submitted, ctx: Context) -> Result:
    if s.phase not in ("submitting", "reconciling") or s.pending is None:
        return s, []
    p = s.pending
    job_commands.remember(s, e.job_id)
    if p.owner:
        s.owners = {**dict(list(s.owners.items())[-(job_commands.RECENT_JOBS - 1) :]), e.job_id: p.owner}
    est = p.estimate or {}
    announce = _reply("flow.submitted", job_id=e.job_id, model=p.model, mode=p.mode)
    cost = format_amount(est["estimated_cost"]) if est.get("estimated_cost") is not None else ""
    currency = str(est.get("currency") or "")
    source = (
        json.dumps({"kind": p.source_kind, "ref": p.source_ref, "name": p.filename}) if p.source_kind else ""
    )
    watch = Watch(e.job_id, p.intent_id, p.row_count, announce, p.rows, cost, currency, source)
    s, out = _drop(s)
    return s, [watch, *out]


def _on_reconciled(s: ChatState, e: Reconciled, ctx: Context) -> Result:
    if s.phase != "reconciling" or s.pending is None:
        return s, []
    if e.job_id:
        return _on_submitted(s, Submitted(e.job_id), ctx)
    file_id = s.pending.file_id
    s, out = _drop(s)
    return s, [_reply("flow.submit_unknown_not_found", file_id=file_id), *out]


def _on_failed(s: ChatState, e: ServiceFailed, ctx: Context) -> Result:
    if e.step in ("cancel", "status", "list", "details"):
        return s, [_error_reply(e)]
    expected = {"upload": "uploading", "precheck": "prechecking", "submit": "submitting"}.get(e.step)
    if s.phase != expected or s.pending is None:
        return s, []
    if e.step == "submit" and e.kind == "unknown":
        s.phase = "reconciling"
        p = s.pending
        return s, [_reply("flow.submit_unknown_checking"), Reconcile(p.intent_id or "", p.file_id or "")]
    if e.step == "precheck" and e.kind == "validation":
        asked = choices.refused(s, e.message, ctx.modes)
        if asked is not None:
            return asked
    file_id = s.pending.file_id if (s.pending.converted or s.pending.path) else None
    if e.step == "submit" and e.kind == "balance":
        return spending_rules.on_submit_short(s, e)
    if e.step == "submit":
        # Never repeated automatically; the user decides. A service that answered "no" refused
        # it (nothing was made); only a service that could not answer leaves it open.
        after = "flow.submit_refused" if e.kind in REFUSALS else "flow.submit_not_repeated"
        s, out = _drop(s)
        return s, [_error_reply(e, file_id), _reply(after), *out]
    pending = s.pending
    s, out = _drop(s)
    return estimating.told(pending, (s, [_error_reply(e, file_id), *out]))


def _on_button(s: ChatState, e: ButtonPressed, ctx: Context) -> Result:
    parts = e.data.split(":")
    if len(parts) == 3 and parts[0] == "c":
        _, action, token = parts
        if s.pending is None or s.pending.token != token:
            return s, [_reply("flow.stale_button")]
        return _confirm_action(s, action, ctx, e.user_id)
    if len(parts) == 3 and parts[:2] == ["j", "a"]:  # run the failed rows of a job again
        if parts[2] not in s.recent:
            return s, [_reply("flow.unknown_job")]
        return resolving.start_input(
            s, ctx, RerunFailed(parts[2]), f"{parts[2]}-failed-rows", None, e.user_id
        )
    answered = job_commands.button(s, parts, e.user_id, ctx.admins)
    if answered is None:
        answered = spending_rules.on_button(s, parts, e.user_id, ctx)
    if answered is not None:
        return answered
    return s, [_reply("flow.stale_button")]


def _confirm_action(s: ChatState, action: str, ctx: Context, user: str = "") -> Result:
    p = s.pending
    assert p is not None
    if action == "drop":
        return _drop(s, "flow.dropped")
    if action == "chk":
        return spending_rules.recheck(s)
    if action == "valid" and s.phase == "awaiting_fix":
        s.phase = "uploading"
        return s, [_reply("flow.sending_valid", count=p.valid), Upload(p.converted or "", p.filename, p.mode)]
    if s.phase not in ("awaiting_confirm", "awaiting_model", "awaiting_mode"):
        return s, [_reply("flow.stale_button")]
    if action == "go":
        if _short(p):
            return s, [_shortfall_again(p)]
        p.owner = user
        return _submit(s, ctx)
    if action == "est":
        return _drop(s, "flow.estimate_only_done", file_id=p.file_id)
    if action == "back":
        s.phase = "awaiting_confirm"
        return s, [again(s, ctx.modes)]
    chosen = choices.on_button(s, action, ctx.modes)
    return chosen if chosen is not None else (s, [_reply("flow.stale_button")])


def _short(p: Pending) -> bool:
    return bool(p.estimate) and (p.estimate or {}).get("sufficient") is False


def _shortfall_again(p: Pending) -> Reply:
    """Submit asked for with too little balance: the figures again, no submit."""
    return _ask_confirm(p, [part for part in _estimate_parts(p) if part[0] != "flow.uploaded"])


def _on_text(s: ChatState, e: TextReceived, ctx: Context) -> Result:
    text = e.text.strip()
    if not text:
        return s, []
    phase = s.phase
    if (
        phase.startswith("awaiting_")
        and phase != "awaiting_input"
        and (resolving.is_url(text) or resolving.FILE_ID.match(text))
    ):
        # A new input, whatever was asked: never read a link as a model or a count.
        return resolving.on_input_text(s, text, ctx)
    if phase == "awaiting_confirm":
        model, mode, confirm, estimate = parse_choice(text, ctx.modes)
        p = s.pending
        assert p is not None
        if estimate:
            return _drop(s, "flow.estimate_only_done", file_id=p.file_id)
        if model or mode:
            p.owner, p.model_given = e.user_id, True
            if _short(p) or (model or p.model, mode or p.mode) != (p.model, p.mode):
                return choices.choose(s, model, mode)  # a new price: estimate, then submit if it fits
            return _submit(s, ctx)
        if confirm:
            if _short(p):
                return s, [_shortfall_again(p)]
            p.owner = e.user_id
            return _submit(s, ctx)
        return s, [_reply("flow.confirm_hint", model=p.model, mode=p.mode)]
    if phase in ("awaiting_model", "awaiting_mode"):
        return choices.on_text(s, text, ctx.modes)
    if phase == "awaiting_approval":
        return s, [again(s, ctx.modes)]
    if phase == "awaiting_count":
        p = s.pending
        assert p is not None
        if p.count_asked:  # asked by an earlier release: the user's number is not trusted
            return _drop(s, "flow.file_id_count_unknown", file_id=p.file_id)
        return s, [_reply("flow.busy")]
    if phase in ("idle", "awaiting_input"):
        return resolving.on_input_text(s, text, ctx)
    if phase == "awaiting_fix":
        return s, [_reply("flow.fix_hint_buttons")]
    return s, [_reply("flow.busy")]


def _on_effect_failed(s: ChatState, e: EffectFailed, ctx: Context) -> Result:
    if s.phase == "submitting" and s.pending is not None:
        # The POST may have left: reconcile, never resubmit.
        return _on_failed(s, ServiceFailed("submit", "unknown", e.effect), ctx)
    if s.phase in ("idle", "reconciling") or s.pending is None:
        return s, [_reply("error.internal")]
    p = s.pending
    uploaded = p.file_id if (p.converted or p.path) else None
    s, out = _drop(s, "error.internal")
    if uploaded:  # the file is at the service: say so, and how to use it without uploading
        out.insert(1, _reply("flow.so_far_uploaded", file_id=uploaded))
    return s, out


def _on_command(s: ChatState, e: CommandReceived, ctx: Context) -> Result:
    name = e.name.lower()
    args = e.args
    if name in ("start", "help"):
        if name == "help" and e.user_id in ctx.admins:
            return s, [Reply(((f"cmd.{name}", {"admin_line": ""}), ("cmd.help_admin", {})))]
        return s, [_reply(f"cmd.{name}", admin_line="")]
    if name == "whoami":
        return s, [Whoami(e.user_id, e.user_id in ctx.admins)]
    if name == "template":
        return s, [SendTemplates()]
    if name == "again":
        return s, [again(s, ctx.modes)]
    if name == "lang":
        if not args or args[0].lower() not in ("zh", "en"):
            return s, [_reply("cmd.lang_usage")]
        s.lang = args[0].lower()
        s.lang_fixed = True
        return s, [_reply("cmd.lang_set")]
    if name in ("drop", "reset"):
        if s.pending is None or s.phase in ("submitting", "reconciling"):
            return s, [_reply("flow.nothing_pending")]
        return _drop(s, "flow.dropped")
    answered = job_commands.command(s, name, args, e.user_id, ctx.admins)
    if answered is None:
        answered = spending_rules.command(s, name, args, e.user_id, ctx)
    if answered is not None:
        return answered
    return s, [_reply("cmd.unknown", name=name[:32])]


_HANDLERS: dict[type, Callable[[ChatState, Any, Context], Result]] = {
    FileReceived: resolving.on_file,
    FileReady: resolving.on_ready,
    InspectResumed: resolving.on_inspect_resumed,
    FileMissing: resolving.on_file_missing,
    ResolveFailed: resolving.on_resolve_failed,
    Inspected: estimating.on_inspected,
    Uploaded: estimating.on_uploaded,
    Prechecked: estimating.on_prechecked,
    Submitted: _on_submitted,
    Reconciled: _on_reconciled,
    Adopted: lambda s, e, ctx: job_commands.on_adopted(s, e),
    RowsKnown: resolving.on_rows_known,
    EffectFailed: _on_effect_failed,
    ServiceFailed: _on_failed,
    ButtonPressed: _on_button,
    TextReceived: _on_text,
    CommandReceived: _on_command,
    Expired: lambda s, e, ctx: (s, []),
    ApprovalNeeded: spending_rules.on_approval_needed,
    OverBudget: spending_rules.on_over_budget,
    ApprovalDecided: spending_rules.on_decided,
    InputGiven: agent_input.on_input_given,
}
