"""The moves every rule of a chat makes (pure): reply, drop the pending input, submit it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conversation.events import Cleanup, Effect, Reply, Submit
from conversation.spending_events import Decide
from conversation.state import ChatState, Pending

if TYPE_CHECKING:
    from conversation.core import Context

Result = tuple[ChatState, list[Effect]]


def reply(key: str, **params: Any) -> Reply:
    return Reply.of(key, **params)


def drop(s: ChatState, key: str | None = None, **params: Any) -> Result:
    out: list[Effect] = []
    if s.pending is not None:
        paths = tuple(p for p in (s.pending.path, s.pending.converted) if p)
        if paths:
            out.append(Cleanup(paths))
        if s.phase == "awaiting_approval" and s.pending.approval_id:
            # Dropped (or replaced) while the admins decide: their messages say so.
            out.append(Decide(s.pending.approval_id, "withdrawn", s.pending.owner))
    s.pending = None
    s.phase = "idle"
    if key:
        out.insert(0, reply(key, **params))
    return s, out


def new_pending(ctx: Context, filename: str = "") -> Pending:
    return Pending(token=ctx.new_id[:8], created_ms=ctx.now_ms, filename=filename)


def cost_of(p: Pending) -> float | None:
    cost = (p.estimate or {}).get("estimated_cost")
    return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None


def submit_effect(p: Pending) -> Submit:
    assert p.intent_id and p.file_id and p.row_count
    return Submit(p.intent_id, p.file_id, p.model, p.mode, p.row_count, cost_of(p), p.owner, p.approved)


def submit(s: ChatState, ctx: Context) -> Result:
    p = s.pending
    assert p is not None
    if not p.file_id or not p.row_count or p.row_count <= 0:
        return drop(s, "flow.nothing_to_submit")
    p.intent_id = ctx.new_id
    # An admin's own job needs nobody's approval.
    p.approved = p.approved or p.owner in ctx.admins
    s.phase = "submitting"
    # No "submitting…" message: the answer comes in a moment, and every message counts
    # against the chat's flood limit.
    return s, [submit_effect(p)]
