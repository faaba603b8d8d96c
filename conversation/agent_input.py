"""An agent's submission (HTTP API, MCP), as a rule of the chat it runs in (pure): the input
and every choice come at once, then the ordinary phases carry it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conversation.events import Download, Effect, FetchUrl, InputGiven, Precheck
from conversation.flow_ops import Result, drop, new_pending, reply
from conversation.state import ChatState

if TYPE_CHECKING:
    from conversation.core import Context


def on_input_given(s: ChatState, e: InputGiven, ctx: Context) -> Result:
    """An agent's submission: a chat of its own, given everything at once."""
    if s.pending is not None or s.phase != "idle":
        return s, [reply("flow.busy")]
    p = new_pending(ctx, e.filename[:100])
    p.owner = e.user_id
    p.model = e.model or p.model
    p.mode = e.mode or p.mode
    p.model_given, p.estimate_only, p.skip_invalid = e.confirm, e.estimate_only, e.skip_invalid
    s.pending = p
    if e.kind == "file_id":
        if e.count <= 0:
            return drop(s, "flow.file_id_count_unknown", file_id=e.ref)
        p.file_id, p.row_count = e.ref, e.count
        s.phase = "prechecking"
        return s, [Precheck(e.count, p.model, p.mode)]
    effect: Effect = FetchUrl(e.ref) if e.kind == "url" else Download(e.ref, p.filename)
    p.source_kind, p.source_ref = ("url", e.ref) if e.kind == "url" else ("channel", e.ref)
    s.phase = "resolving"
    return s, [effect]
