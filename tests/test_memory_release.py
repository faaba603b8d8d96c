"""Freed start-up memory goes back to the system once the bot is up; where the C library
has no malloc_trim (musl), nothing happens and nothing fails."""

from __future__ import annotations

import ctypes

from bot import main


def test_the_c_allocator_is_asked_once_and_its_absence_is_no_error(monkeypatch):
    calls: list[int] = []

    class Glibc:
        def malloc_trim(self, pad: int) -> int:
            calls.append(pad)
            return 1

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Glibc())
    main._give_back_memory()
    assert calls == [0]

    class Musl:
        pass  # no malloc_trim: ctypes raises AttributeError

    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: Musl())
    main._give_back_memory()  # no exception
