"""What a flood control decided, counted against the limits, for the flood tests."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from bot.flood import Ask, FloodControl
from bot.flood_rules import GLOBAL_INTERVAL_MS, PRIVATE_INTERVAL_MS


@pytest.fixture(autouse=True)
async def returns_recorded(redis, monkeypatch):
    """Every flood control of a test records its last returns before Redis closes, as a
    stopping bot does: none is left to run when the test's event loop is gone."""
    made: list[FloodControl] = []
    init = FloodControl.__init__

    def recording(self, *a, **kw):  # type: ignore[no-untyped-def]
        init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(FloodControl, "__init__", recording)
    yield
    for flood in made:
        await flood.flush()


class Record:
    """The times the flood control decided on (ms on Redis's clock), per chat and overall.

    These are the times its scripts compared against the limits, so checking them counts
    sends against the limits without measuring this machine's (busy, noisy) timing."""

    def __init__(self, *floods: FloodControl) -> None:
        self.events: list[tuple[int, str, int]] = []
        for flood in floods:
            flood.observer = self.observe

    def observe(self, chat: int, what: str, ms: int) -> None:
        self.events.append((chat, what, ms))

    def starts(self) -> list[int]:
        return sorted(ms for _, what, ms in self.events if what == "start")

    def per_chat(self, chat: int) -> list[tuple[str, int]]:
        return [(what, ms) for c, what, ms in self.events if c == chat and what in ("chat", "sent")]


def assert_within_limits(record: Record, chats: range | tuple[int, ...], scale: float) -> None:
    per_chat = int(PRIVATE_INTERVAL_MS * scale)
    overall = int(GLOBAL_INTERVAL_MS * scale)
    for chat in chats:
        # In Redis's order (replies on different connections may arrive out of order): a
        # chat's turn, its return (within the same ms when the request is quick), the next
        # turn at least the interval after that return.
        turns = sorted(record.per_chat(chat), key=lambda t: (t[1], t[0] == "sent"))
        assert [what for what, _ in turns] == ["chat", "sent"] * (len(turns) // 2), turns
        for (_, sent_before), (_, taken_next) in zip(turns[1::2], turns[2::2], strict=False):
            assert taken_next - sent_before >= per_chat, (chat, turns)
    assert_paced(record.starts(), overall)


def assert_paced(starts: list[int], interval: int) -> None:
    """Overall: n + 1 consecutive starts span at least (n - 2) intervals (up to two missed
    slots are caught up), so no window W holds more than W / I + 3 starts; and no two start
    at one moment (those caught up are a third of an interval apart)."""
    gap = max(1, interval // 3)
    assert all(b - a >= gap for a, b in itertools.pairwise(starts)), starts
    for i, a in enumerate(starts):
        for n, b in enumerate(starts[i + 1 :], start=1):
            assert b - a >= (n - 2) * interval, (i, n, starts)


def ask(chat: str, member: str) -> Ask:
    """A waiting send's ask, for a take made by hand."""
    return Ask(0, 0, chat, member, 10, asyncio.get_running_loop().create_future())
