"""The bot's heap once it is up: start-up set aside from the collector, memory given back,
and full collections moved to quiet moments.

Python's cyclic collector walks the whole heap in a full collection: in a burst of 1,000
chats that is ~100,000 objects, 20-76 ms of CPU at once on a 2-core machine (bench/e2e),
during which no send leaves and no answer is read; every late send is a slot lost a second
later. The flows make no cyclic garbage of their own (answers and sends leave none), so
there is little for a full collection to find in a burst. The young generations are still
collected as usual; the oldest is collected when the process has been quiet for a check
(under `QUIET_SHARE` of a core), or after `MOST_S` whatever the load, so that memory held
by cycles stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable

CHECK_S = 5.0
DUE = 10  # young collections since the last full one: Python's own default for a full one
QUIET_SHARE = 0.2  # of one core, over the last check
MOST_S = 120.0  # a full collection at least this often, busy or not
NEVER = 1 << 30  # the oldest generation's threshold: no automatic full collection


def settle_heap() -> QuietCollections | None:
    """What starting made (modules, catalogs, settings, clients, scripts) lives as long as
    the process: collected once and set aside from the collector (`gc.freeze`), so a full
    collection later walks only what the chats made. Then the memory freed by starting goes
    back to the system, and (in a running loop) full collections wait for quiet moments."""
    gc.collect()
    gc.freeze()
    give_back_memory()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return QuietCollections(loop).start()


def give_back_memory() -> None:
    """Starting (settings, catalogs, scripts, the first round trips) leaves freed memory in
    the C allocator's heap, which glibc keeps unless asked: handed back to the system once
    the bot is up (bench/idle: 60.1 -> 59.3 MiB). Without glibc (musl): nothing."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class QuietCollections:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.cpu = cpu
        self.full = 0  # full collections made here
        self._saved: tuple[int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._at = self._cpu_at = self._last_full = 0.0

    def start(self) -> QuietCollections:
        self._saved = gc.get_threshold()
        young, middle, _ = self._saved
        gc.set_threshold(young, middle, NEVER)
        self._at, self._cpu_at = self.clock(), self.cpu()
        self._last_full = self._at
        self._schedule()
        return self

    def stop(self) -> None:
        """Python's own thresholds again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def check(self) -> bool:
        """A full collection if one is due and the process was quiet since the last check
        (or the last full one is `MOST_S` old); True if it made one."""
        now, cpu = self.clock(), self.cpu()
        share = (cpu - self._cpu_at) / max(now - self._at, 1e-3)
        self._at, self._cpu_at = now, cpu
        if gc.get_count()[2] < DUE:
            return False
        if share >= QUIET_SHARE and now - self._last_full < MOST_S:
            return False
        gc.collect()
        self.full += 1
        self._last_full = now
        return True

    def _schedule(self) -> None:
        self._timer = self.loop.call_later(CHECK_S, self._tick)

    def _tick(self) -> None:
        self.check()
        self._schedule()
