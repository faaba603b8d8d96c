"""The rules from a file's reading to its estimate (pure, part of `core.step`): the report
(held for the estimate when the file is small), the upload, the precheck and the question
that asks to confirm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchjob import rowmap
from conversation import spending_rules
from conversation.events import Cleanup, Effect, Inspected, Precheck, Prechecked, Reply, Upload, Uploaded
from conversation.flow_ops import drop, submit
from conversation.prompts import ask_confirm, estimate_parts, fix_buttons, report_parts
from conversation.state import ChatState, Pending

if TYPE_CHECKING:
    from conversation.core import Context

Result = tuple[ChatState, list[Effect]]
MAX_ERRORS_INLINE = 10  # invalid rows listed in the report; more go out as a file
ONE_MESSAGE_ROWS = 10_000  # a file this small gets its report and its estimate in one message


def on_inspected(s: ChatState, e: Inspected, ctx: Context) -> Result:
    if s.phase != "inspecting" or s.pending is None:
        return s, [Cleanup((e.converted,))] if e.converted else []
    p = s.pending
    r = e.report
    fatal = r.get("fatal")
    if fatal:
        p.converted = e.converted  # so that _drop cleans it up
        return drop(s, "flow.file_unusable", message=fatal.get("message", ""))
    rows = r.get("rows") or {}
    p.valid, p.invalid = rows.get("valid", 0), rows.get("invalid", 0)
    p.converted = e.converted
    p.rows = rowmap.encode(r.get("line_rows") or [])
    if p.refetched and p.valid:
        # Read again on this host to continue an upload already decided: no second report.
        s.phase = "uploading"
        return s, [Upload(e.converted or p.path or "", p.filename, p.mode)]
    parts = report_parts(r)
    if p.invalid:
        errors = r.get("errors") or []
        lines = "\n".join("• " + err.get("message", "") for err in errors[:MAX_ERRORS_INLINE])
        parts.append(("flow.invalid_rows", {"count": p.invalid, "valid": p.valid, "errors": lines}))
        if len(errors) > MAX_ERRORS_INLINE:
            parts.append(("flow.more_errors_in_file", {"count": len(errors) - MAX_ERRORS_INLINE}))
        if not p.valid:
            s, out = drop(s)
            return s, [Reply((*parts, ("flow.no_valid_rows", {}), ("flow.fix_hint", {}))), *out]
        if p.skip_invalid:  # asked for beforehand (an agent): the valid rows go on
            s.phase = "uploading"
            return s, [Reply(tuple(parts)), Upload(e.converted or p.path or "", p.filename, p.mode)]
        s.phase = "awaiting_fix"
        buttons = fix_buttons(p)
        document = (
            tuple(
                (str(err.get("row") or ""), str(err.get("column") or ""), err.get("message", ""))
                for err in errors
            )
            if len(errors) > MAX_ERRORS_INLINE
            else None
        )
        return s, [Reply((*parts, ("flow.fix_or_valid", {"count": p.valid})), buttons, document)]
    s.phase = "uploading"
    upload = Upload(e.converted or p.path or "", p.filename, p.mode)
    if p.valid <= ONE_MESSAGE_ROWS:
        # Uploaded and priced in moments: the report goes out with the estimate, or with
        # whatever ends the flow first; one message (and one flood slot) fewer per file.
        p.held_report = parts
        return s, [upload]
    return s, [Reply(tuple(parts)), upload]


def on_uploaded(s: ChatState, e: Uploaded, ctx: Context) -> Result:
    if s.phase != "uploading" or s.pending is None:
        return s, []
    p = s.pending
    p.file_id = e.file_id
    p.row_count = e.row_count if e.row_count is not None else p.valid
    if not p.row_count or p.row_count <= 0:
        return told(p, drop(s, "flow.nothing_to_submit"))
    s.phase = "prechecking"
    # "Uploaded" goes out with the estimate: one message fewer per file (flood limits).
    return s, [Precheck(p.row_count, p.model, p.mode)]


def on_prechecked(s: ChatState, e: Prechecked, ctx: Context) -> Result:
    if s.phase != "prechecking" or s.pending is None:
        return s, []
    p = s.pending
    p.estimate = {k: v for k, v in e.estimate.items() if isinstance(v, int | float | str | bool | type(None))}
    p.prior = None  # the service accepted the choice
    rechecked, p.recheck = p.recheck, False
    parts = estimate_parts(p)
    short = p.estimate.get("sufficient") is False
    notice: list[Effect] = [spending_rules.shortfall_notice(p.estimate)] if short else []
    if p.estimate_only:
        s, out = drop(s)
        return s, [Reply((*parts, ("flow.estimate_only_done", {"file_id": p.file_id}))), *out, *notice]
    if p.model_given and not short and not rechecked:
        s, out = submit(s, ctx)
        return s, [Reply(tuple(parts)), *out]
    s.phase = "awaiting_confirm"
    if rechecked and not short:
        parts.insert(0, ("balance.enough_now", {}))
    return s, [ask_confirm(p, parts), *notice]


def told(p: Pending, result: Result) -> Result:
    """`result`, after the report held back for the estimate when the flow ends before it."""
    held, p.held_report = p.held_report, []
    return (result[0], [Reply(tuple(held)), *result[1]]) if held else result
