"""The heap once the bot is up: freed start-up memory goes back to the system (where the C
library has no malloc_trim, musl, nothing happens and nothing fails), start-up is set aside
from the collector, and full collections wait for a quiet moment."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import weakref

from bot import heap


def glibc(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """A C library with malloc_trim; returns the pads it was called with."""
    calls: list[int] = []

    class Glibc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Glibc())
    return calls


def test_the_c_allocator_is_asked_once_and_its_absence_is_no_error(monkeypatch):
    calls = glibc(monkeypatch)
    heap.give_back_memory()
    assert calls == [0]

    class Musl:
        pass  # no malloc_trim: ctypes raises AttributeError

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Musl())
    heap.give_back_memory()  # no exception


def test_what_starting_made_is_set_aside_from_later_full_collections(monkeypatch):
    """Once up, the objects of start-up are frozen: a full collection in a burst walks only
    what the chats made (and the allocator is asked to give memory back)."""
    import gc

    calls = glibc(monkeypatch)
    made_at_start = [object() for _ in range(10)]  # alive through the freeze
    before = gc.get_freeze_count()
    try:
        heap.settle_heap()
        assert gc.get_freeze_count() > before
        assert not any(o is made_at_start for o in gc.get_objects())  # out of every generation
        assert calls == [0]
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual


class Node:
    pass


def cycle_in_the_oldest_generation() -> weakref.ref[Node]:
    """Garbage only a full collection frees: a cycle that was alive while the young
    generations were collected (promoted to the oldest), then dropped. The young
    collections also make a full one due."""
    node = Node()
    node.me = node  # type: ignore[attr-defined]
    ref = weakref.ref(node)
    for _ in range(heap.DUE):
        gc.collect(1)  # survivors go to the oldest generation
    del node
    gc.collect(1)
    assert ref() is not None  # the young collections do not see it
    return ref


async def test_a_full_collection_waits_for_a_quiet_moment_or_for_its_longest_wait():
    now, cpu = [1000.0], [50.0]
    quiet = heap.QuietCollections(
        asyncio.get_running_loop(), clock=lambda: now[0], cpu=lambda: cpu[0]
    ).start()
    try:
        assert gc.get_threshold()[2] == heap.NEVER  # no automatic full collection meanwhile
        ref = cycle_in_the_oldest_generation()
        now[0] += heap.CHECK_S
        cpu[0] += heap.CHECK_S * 0.9  # busy: a burst
        assert not quiet.check() and ref() is not None
        now[0] += heap.CHECK_S
        cpu[0] += heap.CHECK_S * 0.05  # quiet
        assert quiet.check() and ref() is None
        assert not quiet.check()  # quiet again, but nothing due: no collection
        ref = cycle_in_the_oldest_generation()
        now[0] += heap.MOST_S
        cpu[0] += heap.MOST_S  # busy for as long as a full collection may wait
        assert quiet.check() and ref() is None and quiet.full == 2
    finally:
        quiet.stop()
    assert gc.get_threshold()[2] != heap.NEVER


async def test_settling_in_a_running_loop_starts_quiet_collections(monkeypatch):
    glibc(monkeypatch)
    quiet = heap.settle_heap()
    try:
        assert quiet is not None and gc.get_threshold()[2] == heap.NEVER
    finally:
        assert quiet is not None
        quiet.stop()
        gc.unfreeze()
