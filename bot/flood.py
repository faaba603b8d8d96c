"""Flood control shared by every replica, kept in Redis, with each channel's own numbers.

The limits and the scripts that decide every start are in `bot.flood_rules`. This process
only saves round trips with what it knows of its own sends, and orders its waiting sends:

- Its waiting sends are taken in the order of `conversation.channel.SEND_PRIORITY` (first
  answers to what someone just did, further answers, the watcher's summaries, then progress
  edits), first come first served within each: when many chats write at once, everyone
  hears back first, and progress catches up in the gaps.
- One taker at a time asks for the starts of the first few waiting sends at once (the slots
  of the next ~100 ms): a busy process's loop delays and round trips then fall between
  batches, not between every two starts, so they do not lower the rate.
- Each send waits for its slot's time, then starts; its return is recorded with the next
  take, or on its own soon.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from redis.asyncio import Redis

from bot.flood_rules import (
    AHEAD_SLOTS,
    BUSY_POLL_MS,
    DONE,
    DONE_FLUSH_S,
    DRIFT_MS_PER_S,
    IN_FLIGHT_MS,
    LAPSE_MS,
    RENEW,
    RENEW_S,
    TAKE,
    TAKE_AT_MOST,
    TELEGRAM_LIMITS,
    FloodLimits,
)
from conversation.channel import FIRST_ANSWER, SEND_PRIORITY
from conversation.identity import native
from conversation.keys import Keys
from conversation.keys import current as current_keys

T = TypeVar("T")


@dataclass(order=True)
class Ask:
    """A send waiting for its start: answered (True, seconds until its slot) or (False,
    seconds until its chat may be asked for again)."""

    priority: int
    order: int
    chat: str = field(compare=False)
    member: str = field(compare=False)  # its entry in the bot-wide window
    interval: int = field(compare=False)  # its chat's, ms from its return to the next start
    answer: asyncio.Future[tuple[bool, float]] = field(compare=False)


class Waiting:
    """Sends waiting for their start: by priority (lower first), then in order of asking."""

    def __init__(self) -> None:
        self._heap: list[Ask] = []
        self.by_priority: Counter[int] = Counter()  # cancelled senders' asks included until popped

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, ask: Ask) -> None:
        heapq.heappush(self._heap, ask)  # one put back keeps its place: its order is its own
        self.by_priority[ask.priority] += 1

    def pop(self, most: int) -> list[Ask]:
        """The first `most` still waiting (a cancelled sender's ask is dropped)."""
        out: list[Ask] = []
        while self._heap and len(out) < most:
            ask = heapq.heappop(self._heap)
            self.by_priority[ask.priority] -= 1
            if not ask.answer.done():
                out.append(ask)
        return out


class FloodControl:
    """What this process knows of its own sends (when each chat it wrote to is ready again,
    when the next bot-wide slot is due, which returns are not recorded yet) only saves round
    trips: the scripts on Redis decide every start. A send costs a share of one round trip:
    the starts of the sends waiting together, chat and bot-wide at once, carrying earlier
    sends' returns."""

    def __init__(
        self,
        redis: Redis,
        *,
        scale: float = 1.0,
        keys: Keys | None = None,
        limits: FloodLimits = TELEGRAM_LIMITS,
    ) -> None:
        self.k = keys or current_keys()
        self.limits = limits
        name = limits.name
        self._keys = [self.k.flood_all_of(name), self.k.flood_log_of(name)]
        self._keys += [self.k.flood_ready_of(name), self.k.flood_busy_of(name), self.k.flood_last_of(name)]
        self.r = redis
        self._take = redis.register_script(TAKE)
        self._done = redis.register_script(DONE)
        self._renew = redis.register_script(RENEW)
        self.scale = scale  # tests and benchmarks may shrink the intervals
        self.take_at_most = TAKE_AT_MOST
        self._waiting = Waiting()
        self._taker: asyncio.Task[None] | None = None
        self._ids = itertools.count()
        self._asked = itertools.count()  # waiting sends' order, first come first served
        self._me = secrets.token_hex(6)  # unique among the replicas' senders
        # This process's view, on the loop's clock: chats with a request in flight from here,
        # when each chat it wrote to may be written to again, when the next slot is due.
        self._in_flight: dict[str, asyncio.Event] = {}
        self._ready: dict[str, float] = {}
        self._slot_due = 0.0
        # Redis's clock minus the loop's (ms), at most: read off each take's reply. A return
        # recorded as (loop time + this) is never earlier than it really was on Redis.
        self._offset_hi = 0.0  # set by the take every send waits for before its request
        self._offset_at = 0.0
        # Returns not recorded yet: (member, Redis ms) for the window, (chat, Redis ms,
        # interval) for the chats.
        self._returns: list[str | int] = []
        self._chat_returns: list[str | int] = []
        self._flush: asyncio.TimerHandle | None = None
        self._recording: set[asyncio.Task[object]] = set()
        self._renewals: dict[str, asyncio.TimerHandle] = {}  # by member: each send's busy-mark timer
        # Called with (chat, what, ms on Redis's clock) for "chat" (the chat's turn taken),
        # "start" (the bot-wide slot given: the time of the slot), "sent" (the chat's request
        # returned, as its pacing counts it) and "done" (returned, as the bot-wide window
        # counts it): the times the limits were decided on, for tests and benchmarks to count
        # against the limits.
        self.observer: Callable[[str, str, int], None] | None = None

    def answers_ahead(self) -> float:
        """Seconds of the bot-wide budget that the first answers waiting here will take."""
        lim = self.limits
        return self._waiting.by_priority[FIRST_ANSWER] * lim.window_ms * self.scale / lim.window_limit / 1000

    @staticmethod
    async def _sleep_jittered(seconds: float) -> None:
        # A little jitter so that many waiting senders do not ask again all at once.
        await asyncio.sleep(seconds + random.uniform(0, 0.005))

    async def _chat_known_ready(self, chat_id: str) -> None:
        """Wait, without a round trip, for what this process knows holds the chat up."""
        loop = asyncio.get_running_loop()
        while True:
            if (busy := self._in_flight.get(chat_id)) is not None:
                await busy.wait()
            elif (ready := self._ready.get(chat_id, 0.0) - loop.time()) > 0:
                await asyncio.sleep(ready)
            else:
                return

    async def send(self, chat_id: str, request: Callable[[], Awaitable[T]]) -> T:
        """Perform `request` (one message to `chat_id`) within the limits."""
        lim = self.limits
        interval = max(
            1, int((lim.group_ms if lim.is_group(native(chat_id)) else lim.private_ms) * self.scale)
        )
        member = f"{self._me}:{next(self._ids)}"  # this send's entry in the bot-wide window
        priority = SEND_PRIORITY.get()
        mine = asyncio.Event()  # set when this send is over
        loop = asyncio.get_running_loop()
        while True:
            # The chat's own pace first, without holding up other chats.
            await self._chat_known_ready(chat_id)
            granted, wait = await self._ask(Ask(priority, 0, chat_id, member, interval, loop.create_future()))
            if granted:
                self._in_flight[chat_id] = mine
                break
            # Another sender (elsewhere) holds the chat, or wrote to it last: wait and ask again.
            await self._sleep_jittered(wait)
        try:
            if wait > 0:
                await asyncio.sleep(wait)  # its slot's time
            return await self._renewing(chat_id, member, request)
        finally:
            self._returned(chat_id, member, interval, mine)

    def _returned(self, chat_id: str, member: str, interval: int, mine: asyncio.Event | None) -> None:
        returned = asyncio.get_running_loop().time()
        self._record_return(chat_id, member, returned, interval)
        # Redis counts from the return as recorded (`at`, a little later): a few ms more.
        self._ready[chat_id] = returned + (interval + 5) / 1000
        # Ours unless the chat's mark lapsed mid-request and another send took it.
        if mine is not None and self._in_flight.get(chat_id) is mine:
            del self._in_flight[chat_id]
            mine.set()
        if len(self._ready) > 10_000:  # forget chats whose pause is over
            self._ready = {c: t for c, t in self._ready.items() if t > returned}

    async def _ask(self, ask: Ask) -> tuple[bool, float]:
        """Wait among the waiting sends until the taker answers this one."""
        ask.order = next(self._asked)
        self._waiting.push(ask)
        if self._taker is None:
            self._taker = asyncio.ensure_future(self._take_turns())
        try:
            return await ask.answer
        except asyncio.CancelledError:
            if ask.answer.done() and not ask.answer.cancelled() and ask.answer.result()[0]:
                # Given a slot just as it was cancelled: the slot is over, unused.
                self._returned(ask.chat, ask.member, ask.interval, None)
            raise

    async def _take_turns(self) -> None:
        """While sends wait: take the starts of the first few at once, one take at a time,
        each a bot-wide interval before the next slot is due."""
        loop = asyncio.get_running_loop()
        lead = max(1, int(self.limits.global_ms * self.scale)) / 1000
        try:
            while self._waiting:
                if (early := self._slot_due - lead - loop.time()) > 0:
                    await asyncio.sleep(early)  # the slot this process saw set is not due yet
                asks = self._waiting.pop(self.take_at_most)
                if asks and (held_ms := await self._take_for(asks)) > 0:
                    await asyncio.sleep(held_ms / 1000)
        finally:
            self._taker = None
            for ask in self._waiting.pop(len(self._waiting)):  # only if the taker itself was cancelled
                ask.answer.cancel()

    async def _take_for(self, asks: list[Ask]) -> float:
        """One take for `asks`: each is answered or waits again in its place; returns the
        ms the bot-wide rules hold the ones put back (0 when none)."""
        lim = self.limits
        global_ms = max(1, int(lim.global_ms * self.scale))
        args: list[str | int] = [global_ms, max(1, int(lim.window_ms * self.scale)), lim.window_limit]
        args += [LAPSE_MS, max(global_ms, 20), IN_FLIGHT_MS, BUSY_POLL_MS, AHEAD_SLOTS * global_ms]
        args += [len(asks), *(x for ask in asks for x in (ask.chat, ask.member))]
        returns, chats = self._take_returns()
        loop = asyncio.get_running_loop()
        before = loop.time()
        try:
            reply = await self._take(keys=self._keys, args=[*args, len(returns) // 2, *returns, *chats])
        except BaseException as e:
            # Recorded again later (ZADD XX, a later ready time and ZREM are idempotent).
            self._returns, self._chat_returns = returns + self._returns, chats + self._chat_returns
            for ask in asks:
                if isinstance(e, asyncio.CancelledError):
                    ask.answer.cancel()
                elif not ask.answer.done():
                    ask.answer.set_exception(e)
            if isinstance(e, Exception):
                return 0
            raise
        after = loop.time()
        values = [int(x) for x in reply]
        self._slot_due = after + values[0] / 1000  # never early: Redis's now was before `after`
        held = 0
        for ask, i in zip(asks, range(1, len(values), 3), strict=False):
            now, wait_ms, for_chat = values[i : i + 3]
            if now:
                self._learn_offset(now - before * 1000, before, (after - before) * 1000)
                self._observe(ask.chat, "chat", now)
                self._observe(ask.chat, "start", now + wait_ms)
                if ask.answer.done():  # its sender was cancelled meanwhile: the slot is over
                    self._returned(ask.chat, ask.member, ask.interval, None)
                else:
                    ask.answer.set_result((True, wait_ms / 1000))
            elif for_chat:
                if not ask.answer.done():
                    ask.answer.set_result((False, max(1, wait_ms) / 1000))
            else:
                held = wait_ms
                self._waiting.push(ask)  # its place kept: its order is its own
        return held

    def _learn_offset(self, sample: float, at: float, round_trip_ms: float) -> None:
        """Each start's reply bounds the offset from above (Redis read its clock after
        `before`) and from below (before `after`, `round_trip_ms` later); the least upper
        bound is the closest. An older bound is widened by the most the two clocks can drift
        apart since, so it stays one."""
        drifted = self._offset_hi + (at - self._offset_at) * DRIFT_MS_PER_S if self._offset_at else sample
        if sample - round_trip_ms > drifted:
            # Above every earlier bound even at its lowest: Redis's wall clock stepped
            # forward. The old bound would date returns too early, and the window would let
            # too many sends through; this one is a bound again. A reply that was only slow
            # does not come here: a sample 63 ms high from a 72 ms round trip (the loop
            # busy mid-burst) was taken for a step, and every return for the next 150 ms
            # was dated 63 ms late, each a slot lost a second later (bench/e2e: a second
            # of 23-26 sends).
            drifted = sample
        self._offset_hi, self._offset_at = min(sample, drifted), at

    def _record_return(self, chat_id: str, member: str, returned: float, interval: int) -> None:
        """The send returned (loop time): recorded with the next start, or on its own soon."""
        at = int(returned * 1000 + self._offset_hi) + 1  # +1: Redis's TIME is cut to the ms
        self._observe(chat_id, "done", at)
        self._observe(chat_id, "sent", at)
        self._returns += [member, at]
        self._chat_returns += [chat_id, at, interval]
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(DONE_FLUSH_S, self._flush_returns)

    def _take_returns(self) -> tuple[list[str | int], list[str | int]]:
        returns, chats = self._returns, self._chat_returns
        self._returns, self._chat_returns = [], []
        return returns, chats

    def _returns_args(self) -> list[str | int]:
        """The returns not recorded yet, as the scripts' RETURNS read them (taken: recorded
        now); empty when there are none."""
        returns, chats = self._take_returns()
        return [len(returns) // 2, *returns, *chats] if returns or chats else []

    def _flush_returns(self) -> None:
        self._flush = None
        if args := self._returns_args():
            task = asyncio.ensure_future(self._done(keys=self._keys, args=args))
            task.add_done_callback(_retrieved)
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

    async def flush(self) -> None:
        """Record the returns not recorded yet (at a stop: the chats are free at once for
        the other replicas, not only when their marks lapse)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if args := self._returns_args():
            await self._done(keys=self._keys, args=args)
        if self._recording:  # recordings on their way: they end here, not at the loop's close
            await asyncio.wait(list(self._recording))

    def _observe(self, chat_id: str, what: str, ms: int) -> None:
        if self.observer is not None:
            self.observer(chat_id, what, ms)

    async def _renewing(self, chat_id: str, member: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run the request, renewing the chat's busy mark each second while it lasts (most
        requests end before the first renewal: a timer, no task, until then). The timer is
        kept by the send's member, not in a closure that names itself: that was a cycle
        for the collector at every send."""
        loop = asyncio.get_running_loop()
        self._renewals[member] = loop.call_later(RENEW_S, self._renew_busy, member, chat_id)
        try:
            return await request()
        finally:
            self._renewals.pop(member).cancel()

    def _renew_busy(self, member: str, chat_id: str) -> None:
        task = asyncio.ensure_future(self._renew(keys=self._keys[3:4], args=[chat_id, IN_FLIGHT_MS]))
        task.add_done_callback(_retrieved)
        self._renewals[member] = asyncio.get_running_loop().call_later(
            RENEW_S, self._renew_busy, member, chat_id
        )


def _retrieved(task: asyncio.Future[object]) -> None:
    """A recording or renewal that failed lapses on its own; its error is retrieved (no warning)."""
    if not task.cancelled():
        task.exception()
