"""Files are taken in (downloaded, read, uploaded, priced) a bounded number at a time, the
oldest input first, and fewer at a time when the event loop is short of CPU.

When hundreds of chats drop a file at once, starting every intake together shares the CPU
among all of them: each advances slowly and the first answers (the estimates) come late for
everyone while the send budget sits unused (bench/e2e: 500 files at once, p99 first answer
1.28x its bound with every intake running, 1.06x eight at a time). A fixed small bound
would starve a slow service instead (intakes waiting on the network for seconds), so the
bound follows the loop's lag: a tick every 50 ms while intakes run; one that runs more than
5 ms late means the CPU is the limit, and the bound shrinks by a quarter (not below 8, nor
raised to it);
one on time lets it grow by a fifth (at least one; up to `slots`), so that once a burst's
updates are in, a slow service soon has enough files in flight again (bench/e2e --latency).
It starts low, at 4, and goes back there when the intakes are idle: a burst's first files
then go through their stages without queueing behind 64 others at each, and the first
answers start leaving at once; with 64 started together they moved in step, and the
answers came in a wave after most of a second, then a second of echo in the send window
(bench/e2e: a second of 24-26 sends in a third of the bursts; starting at 8, in 2 of 17,
both the first burst of a fresh process). Starting at 4 rather than 8, the first answer of
a 200-chat burst left after 0.142 s rather than 0.160 s on average, and its first second
held 27-30 sends rather than 25-29 (16 bursts each, interleaved).
A chat further along keeps its place: its turn is by when its input arrived, not by when it
asked again.

Nor are files taken in faster than their answers can leave: while the first answers already
waiting for the channel's send budget would take `AHEAD_MOST_S` of it, no turn is given.
Reading 1,000 files at once in 11 s, when their answers take 33 s to send, only made the
loop late for the sends of those seconds (bench/e2e: sends started 3-9 ms after their slot
and their requests took 4-21 ms, medians of each second; 1-2 ms each with the reading
spread out). The window counts a send until a second after its return, so every late
millisecond was a slower second.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

DEFAULT_SLOTS = 64
FEWEST = 8  # a lagging loop shrinks the bound no lower: a slow service still gets work
FIRST = 4  # a burst's first files: their answers are the first second's sends
TICK_S = 0.05
LATE_S = 0.005
AHEAD_MOST_S = 2.0  # of answers ready before the channel can send them: enough that it never waits
AT_ONCE = 8  # turns given in one pass of the loop; the next ones in the next pass


class Intake:
    def __init__(
        self,
        slots: int = DEFAULT_SLOTS,
        tick_s: float | None = TICK_S,
        answers_ahead: Callable[[], float] | None = None,
    ) -> None:
        """`tick_s`: how often the loop's lag is sampled while intakes run (None: never;
        whoever made it calls `lag`). `answers_ahead`: the channel's seconds of first answers
        waiting to be sent (None: a channel without a send budget)."""
        self.most = max(1, slots)
        self.answers_ahead = answers_ahead
        self.tick_s = tick_s
        self.bound = self._start()  # what the loop's lag allows now
        self.held = 0
        self._waiting: list[tuple[tuple[int, str], int, asyncio.Future[None]]] = []  # (since, order, turn)
        self._order = itertools.count()
        self._tick: asyncio.TimerHandle | None = None
        self._given = 0  # turns given in this pass of the loop

    @asynccontextmanager
    async def turn(self, since: tuple[int, str]) -> AsyncIterator[None]:
        """Hold a slot; `since` orders the waiting: the input's arrival (ms), then a key of
        its own, so that inputs of the same millisecond keep one order across their steps."""
        self._watch()
        if not self._waiting and self._admits():
            self._give()
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (since, next(self._order), turn))
            try:
                await turn  # the slot is handed over held
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # handed a slot while being cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def lag(self, late_s: float) -> None:
        """A tick ran `late_s` late: shrink the bound when the CPU is the limit, else grow it;
        with no intake held or waiting, the next burst starts low again."""
        if not self.held and not self._waiting:
            self.bound = self._start()
        elif late_s > LATE_S:  # shrink to FEWEST at least, but a bound still below it stays
            self.bound = max(min(float(FEWEST), self.bound), self.bound * 0.75)
        else:
            self.bound = min(float(self.most), max(self.bound + 1, self.bound * 1.2))
        self._hand_on()  # the answers ahead may have left meanwhile

    def _start(self) -> float:
        return float(min(FIRST, self.most))

    def _admits(self) -> bool:
        if self.held >= int(self.bound) or self._given >= AT_ONCE:
            return False
        return self.answers_ahead is None or self.answers_ahead() < AHEAD_MOST_S

    def _give(self) -> None:
        """One more turn in this pass of the loop. Turns given together run their first
        steps in one pass: 64 at once made passes of 20-40 ms (bench/e2e, 1,000 files),
        and every send due meanwhile waited behind them; AT_ONCE a pass, sends get through
        in between."""
        self.held += 1
        self._given += 1
        if self._given == 1:
            asyncio.get_running_loop().call_soon(self._next_pass)

    def _next_pass(self) -> None:
        self._given = 0
        self._hand_on()

    def _release(self) -> None:
        self.held -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        while self._waiting and self._admits():
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                self._give()
                turn.set_result(None)

    def _watch(self) -> None:
        if self._tick is None and self.tick_s is not None:
            loop = asyncio.get_running_loop()
            due = loop.time() + self.tick_s
            self._tick = loop.call_at(due, self._ticked, due)

    def _ticked(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        self._tick = None
        self.lag(loop.time() - due)
        if self.held or self._waiting:  # idle: no ticks
            self._watch()
