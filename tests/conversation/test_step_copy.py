"""`step` leaves its input as it was; `advance` (the runner's, on a state just read from the
store) changes it in place, and both decide the same."""

from __future__ import annotations

import pytest

from conversation import core
from conversation.events import FileReady, FileReceived, Inspected, Prechecked, TextReceived, Uploaded
from conversation.state import ChatState
from tests.conversation.test_core import REPORT_OK, at, ctx

FLOW = [
    FileReceived("ref1", "p.csv", 100),
    FileReady("/m/a.csv", "p.csv"),
    Inspected(REPORT_OK, "/m/a.jsonl"),
    Uploaded("file_1", 2),
    Prechecked({"estimated_cost": 4.0, "balance": 10.0, "sufficient": True}),
    TextReceived("fast google/gemini-2.5-flash-image"),
]


def states() -> list[tuple[ChatState, object]]:
    """Each state of a whole flow with the event that comes next, and an expired input
    (its drop and the event after it: the recursive path)."""
    out, s = [], ChatState()
    for ev in FLOW:
        out.append((s, ev))
        s, _ = core.step(s, ev, ctx())
    out.append((at("awaiting_confirm", file_id="f"), TextReceived("hello")))
    return out


@pytest.mark.parametrize(("i"), range(len(FLOW) + 1))
def test_step_leaves_its_input_and_advance_decides_the_same(i):
    state, event = states()[i]
    late = ctx(now=5_000_000_000) if i == len(FLOW) else ctx()  # the last one has expired
    before = state.model_dump_json()
    stepped, effects = core.step(state, event, late)
    assert state.model_dump_json() == before  # untouched

    owned = ChatState.model_validate_json(before)
    advanced, effects2 = core.advance(owned, event, late)
    assert advanced.model_dump_json() == stepped.model_dump_json()
    assert effects2 == effects
    assert advanced is owned  # in place: no copy made
