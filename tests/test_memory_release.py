"""Freed start-up memory goes back to the system once the bot is up; where the C library
has no malloc_trim (musl), nothing happens and nothing fails."""

from __future__ import annotations

import ctypes

from bot import main


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
    main._give_back_memory()
    assert calls == [0]

    class Musl:
        pass  # no malloc_trim: ctypes raises AttributeError

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Musl())
    main._give_back_memory()  # no exception


def test_what_starting_made_is_set_aside_from_later_full_collections(monkeypatch):
    """Once up, the objects of start-up are frozen: a full collection in a burst walks only
    what the chats made (and the allocator is asked to give memory back)."""
    import gc

    calls = glibc(monkeypatch)
    made_at_start = [object() for _ in range(10)]  # alive through the freeze
    before = gc.get_freeze_count()
    try:
        main.settle_heap()
        assert gc.get_freeze_count() > before
        assert not any(o is made_at_start for o in gc.get_objects())  # out of every generation
        assert calls == [0]
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual
