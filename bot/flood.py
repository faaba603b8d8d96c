"""Flood control shared by every replica, kept in Redis, with each channel's own numbers.

Telegram allows about 1 message/s per chat, 20/min per group and 30/s overall. Feishu/Lark
allows 5 messages/s per chat (a group's 5 shared by its bots) and, per app, 50/s and
1,000/min (`LARK_LIMITS`). The rules below are the same for both; only the numbers differ.

- Per chat, spacing runs from the moment the previous request *completed* (Telegram counts a
  message when it arrives, and a chat's messages are few): a chat is marked busy while its
  request is in flight and gets its next allowed time when it returns.
- Overall, two rules on Redis's clock, taken atomically at the moment of starting, so
  several requests can be in flight at once (the round trip to Telegram does not cap
  throughput) and replicas share the budget: starts are spaced (33 ms; a slot taken late
  does not push the next one back, and up to two missed slots are caught up), and at most
  30 sends may be in flight or have returned within the last second. Telegram counts a
  message when it arrives, between its start and its return, so no second can see more than
  30 arrivals however late a busy process gets its requests out; the rate is 30 per
  (1 s + round trip).
- A send takes its chat's turn and the bot-wide slot in one script, one round trip; the
  returns of earlier sends ride on it. Every flood key of a channel is in one hash tag (one
  node of a cluster): the budget is one for the whole bot, and 30 sends/s are little load.
- Within a process, one sender at a time waits for the next start, in the order of
  `conversation.channel.SEND_PRIORITY` (first answers to what someone just did, further
  answers, the watcher's summaries, then progress edits), first come first served within
  each: when many chats write at once, everyone hears back first, and progress catches up
  in the gaps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis

from conversation.channel import SEND_PRIORITY
from conversation.identity import LARK, TELEGRAM, native
from conversation.keys import Keys
from conversation.keys import current as current_keys

T = TypeVar("T")

# Returns of earlier sends, recorded first by TAKE and on their own by DONE. ARGV[n0] is the
# number of (member, time) pairs of the bot-wide window that follow it; after them come
# (chat, time, interval) triples: the chat is no longer busy, and its next send may start
# `interval` ms after its return (times in ms on Redis's clock, never earlier than real).
RETURNS = """
local function record_returns(n0)
  local pairs_end = n0 + 2 * tonumber(ARGV[n0])
  for i = n0 + 1, pairs_end, 2 do redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[i + 1]), ARGV[i]) end
  for i = pairs_end + 1, #ARGV, 3 do
    redis.call('ZADD', KEYS[3], tonumber(ARGV[i + 1]) + tonumber(ARGV[i + 2]), ARGV[i])
    redis.call('ZREM', KEYS[4], ARGV[i])
  end
  if pairs_end < #ARGV then redis.call('PEXPIRE', KEYS[3], 120000) end
end
"""
# One send's start, chat and bot-wide at once (every key in the channel's flood slot):
# {the time taken, ms until the next slot, 0}; or, when it may not start yet,
# {0, ms to wait, 1} for the chat (busy: a request to it is in flight until its return, or
# ARGV[8] ms if its sender dies; or before its next allowed time) or {0, ms to wait, 0} for
# the bot-wide rules. Those are two, on Redis's clock, so replicas share them:
# - spacing: the next slot follows the one just due, so a late wake-up does not cost
#   throughput; after a gap, up to two missed slots may be taken at once (the window's
#   returns come in bunches: waiting out the spacing after each would lose ~4% of the rate),
#   so any period T holds at most T / interval + 3 starts;
# - a window: at most ARGV[5] sends that are in flight or returned within the last window
#   (ARGV[4] ms). Telegram counts a message when it arrives, somewhere between its start and
#   its return; so however late requests leave a busy process, no window of that length can
#   see more arrivals than the limit. Entries in flight are scored their lapse time (a
#   dead sender's lapses) until their return is recorded.
TAKE = (
    RETURNS
    + """
record_returns(10)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat = ARGV[1]
local busy = tonumber(redis.call('ZSCORE', KEYS[4], chat) or '0')
if busy > now then return {0, tonumber(ARGV[9]), 1} end
local ready = tonumber(redis.call('ZSCORE', KEYS[3], chat) or '0')
if ready > now then return {0, ready - now, 1} end
local due = tonumber(redis.call('GET', KEYS[1]) or '0')
if due > now then return {0, due - now, 0} end
local window, limit, lapse = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= limit then
  -- Full: the oldest return leaves the window at a known time; if every entry is still in
  -- flight (scored its lapse), one may return any moment: ask again soon.
  local oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  if oldest <= now then return {0, oldest + window - now + 1, 0} end
  return {0, tonumber(ARGV[7]), 0}
end
local interval = tonumber(ARGV[2])
local base = math.max(due, now - 2 * interval)
redis.call('SET', KEYS[1], base + interval, 'PX', 120000)
redis.call('ZADD', KEYS[2], now + lapse, ARGV[3])
redis.call('PEXPIRE', KEYS[2], lapse + window)
-- The chat is busy until its return (or the lapse). What is past is forgotten now and
-- then (one start in 8, by the clock): entries are read by score, stale ones only take room.
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[8]), chat)
redis.call('PEXPIRE', KEYS[4], 120000)
if now % 8 == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
end
local next = base + interval - now
if redis.call('ZCARD', KEYS[2]) >= limit then  -- full now: the next start waits for the oldest return too
  local oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  if oldest <= now then next = math.max(next, oldest + window - now + 1) end
end
return {now, next, 0}
"""
)
# Returns when no start carries them soon (ARGV as in RETURNS, from ARGV[1]).
DONE = RETURNS + "record_returns(1)\nreturn 1\n"
# A request still in flight: its chat stays busy ARGV[2] ms more (only if still marked).
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
"""


@dataclass(frozen=True)
class FloodLimits:
    name: str  # the channel (conversation.identity): its bot-wide keys are its own
    private_ms: int  # per chat: from one message's return to the next start
    group_ms: int
    global_ms: int  # bot-wide spacing of starts
    window_ms: int  # bot-wide: at most `window_limit` sends in flight or returned within it
    window_limit: int
    is_group: Callable[[str], bool] = lambda native: False


TELEGRAM_LIMITS = FloodLimits(
    TELEGRAM,
    private_ms=1050,  # 1 message/s per chat
    group_ms=3050,  # 20 messages/min per group
    global_ms=33,  # spacing: 30.3 starts/s at most (the window keeps any second to 30)
    window_ms=1000,  # Telegram's window: about 30 messages per second overall
    # Telegram's 30: every send that could arrive within a second is counted, from its start
    # to its return as recorded no earlier than it was, so no second sees more than 30.
    window_limit=30,
    is_group=lambda native: native.startswith("-"),  # groups and channels have negative ids
)
# Feishu's "send message" and "update card" limits: 5/s per chat, and per app 50/s and
# 1,000/min. The spacing keeps under the minute's limit (16.1/s); the window under 50/s.
LARK_LIMITS = FloodLimits(LARK, private_ms=210, group_ms=210, global_ms=62, window_ms=1000, window_limit=45)
# Kept for the benchmarks and tests that name Telegram's numbers.
PRIVATE_INTERVAL_MS = TELEGRAM_LIMITS.private_ms
GROUP_INTERVAL_MS = TELEGRAM_LIMITS.group_ms
GLOBAL_INTERVAL_MS = TELEGRAM_LIMITS.global_ms
WINDOW_MS = TELEGRAM_LIMITS.window_ms
WINDOW_LIMIT = TELEGRAM_LIMITS.window_limit
LAPSE_MS = 30_000  # a send in flight counts in the window this long at most (its sender may be dead)
# A chat is busy while a request to it is in flight: the mark lapses this soon after its
# sender dies (a killed replica must not hold its chats up), and is renewed while it lives.
IN_FLIGHT_MS = 3_000
RENEW_S = 1.0
BUSY_POLL_MS = 20  # how often a sender looks again while another request to its chat is in flight
DONE_FLUSH_S = 0.05  # returns not carried by a start by then are recorded on their own
DRIFT_MS_PER_S = 1.0  # most that Redis's clock and ours drift apart: twice NTP's largest slew
CLOCK_STEP_MS = 50  # a start's offset this far above the bound: the clock stepped; start again


class Turns:
    """A lock handed out by priority (lower first), then in order of asking."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int) -> None:
        if not self._busy and not self._waiting:
            self._busy = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed the turn just as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)  # the turn passes straight to the next waiter
                return
        self._busy = False


class FloodControl:
    """What this process knows of its own sends (when each chat it wrote to is ready again,
    when the next bot-wide slot is due, which returns are not recorded yet) only saves round
    trips: the scripts on Redis decide every start. Per send, one round trip: the start,
    chat and bot-wide at once, carrying earlier sends' returns."""

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
        self._keys += [self.k.flood_ready_of(name), self.k.flood_busy_of(name)]
        self.r = redis
        self._take = redis.register_script(TAKE)
        self._done = redis.register_script(DONE)
        self._renew = redis.register_script(RENEW)
        self.scale = scale  # tests and benchmarks may shrink the intervals
        self._turns = Turns()
        self._ids = itertools.count()
        self._me = secrets.token_hex(6)  # unique among the replicas' senders
        # This process's view, on the loop's clock: chats with a request in flight from here,
        # when each chat it wrote to may be written to again, when the next slot is due.
        self._in_flight: dict[str, asyncio.Event] = {}
        self._ready: dict[str, float] = {}
        self._slot_due = 0.0
        # Redis's clock minus the loop's (ms), at most: read off each start's reply. A return
        # recorded as (loop time + this) is never earlier than it really was on Redis.
        self._offset_hi = 0.0  # set by the start every send takes before its request
        self._offset_at = 0.0
        # Returns not recorded yet: (member, Redis ms) for the window, (chat, Redis ms,
        # interval) for the chats.
        self._returns: list[str | int] = []
        self._chat_returns: list[str | int] = []
        self._flush: asyncio.TimerHandle | None = None
        self._recording: set[asyncio.Task[object]] = set()
        # Called with (chat, what, ms on Redis's clock) for "chat" (the chat's turn taken),
        # "start" (the bot-wide slot taken; both at once), "sent" (the chat's request
        # returned, as its pacing counts it) and "done" (returned, as the bot-wide window
        # counts it): the times the limits were decided on, for tests and benchmarks to count
        # against the limits.
        self.observer: Callable[[str, str, int], None] | None = None

    @staticmethod
    async def _sleep_ms(ms: int) -> None:
        # A little jitter so that many waiting senders do not ask again all at once.
        await asyncio.sleep(ms / 1000 + random.uniform(0, 0.005))

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
        while True:
            # The chat's own pace first, without holding up other chats.
            await self._chat_known_ready(chat_id)
            await self._turns.acquire(priority)
            try:
                # Holding the turn: starts go out in priority order.
                chat_wait = await self._start(chat_id, member)
                if not chat_wait:
                    self._in_flight[chat_id] = mine
            finally:
                self._turns.release()
            if not chat_wait:
                break
            # Another sender (elsewhere) holds the chat, or wrote to it last: wait and ask again.
            await self._sleep_ms(chat_wait)
        loop = asyncio.get_running_loop()
        try:
            return await self._renewing(chat_id, request)
        finally:
            returned = loop.time()
            self._record_return(chat_id, member, returned, interval)
            # Redis counts from the return as recorded (`at`, a little later): a few ms more.
            self._ready[chat_id] = returned + (interval + 5) / 1000
            # Ours unless the chat's mark lapsed mid-request and another send took it.
            if self._in_flight.get(chat_id) is mine:
                del self._in_flight[chat_id]
            mine.set()
            if len(self._ready) > 10_000:  # forget chats whose pause is over
                self._ready = {c: t for c, t in self._ready.items() if t > returned}

    async def _start(self, chat_id: str, member: str) -> int:
        """Take the start: 0 when taken; the ms to wait when the chat is not free yet. A
        bot-wide wait is waited here, holding the turn, so starts keep their order."""
        lim = self.limits
        global_ms = max(1, int(lim.global_ms * self.scale))
        window_ms = max(1, int(lim.window_ms * self.scale))
        fixed: list[str | int] = [chat_id, global_ms, member, window_ms, lim.window_limit, LAPSE_MS]
        fixed += [max(global_ms, 20), IN_FLIGHT_MS, BUSY_POLL_MS]
        loop = asyncio.get_running_loop()
        while True:
            if (early := self._slot_due - loop.time()) > 0:
                await asyncio.sleep(early)  # the slot this process saw set is not due yet
            returns, chats = self._take_returns()
            before = loop.time()
            try:
                reply = await self._take(keys=self._keys, args=[*fixed, len(returns) // 2, *returns, *chats])
            except BaseException:
                # Recorded again later (ZADD XX, a later ready time and ZREM are idempotent).
                self._returns, self._chat_returns = returns + self._returns, chats + self._chat_returns
                raise
            now, wait_ms, for_chat = (int(x) for x in reply)
            after = loop.time()
            if now:
                self._learn_offset(now - before * 1000, before)
                self._slot_due = after + wait_ms / 1000  # never early: Redis's now was before `after`
                self._observe(chat_id, "chat", now)
                self._observe(chat_id, "start", now)
                return 0
            if for_chat:
                return max(1, wait_ms)
            await asyncio.sleep(wait_ms / 1000)

    def _learn_offset(self, sample: float, at: float) -> None:
        """Each start's reply bounds the offset from above (Redis read its clock after
        `before`); the least bound is the closest. An older bound is widened by the most the
        two clocks can drift apart since, so it stays one."""
        drifted = self._offset_hi + (at - self._offset_at) * DRIFT_MS_PER_S if self._offset_at else sample
        if sample > drifted + CLOCK_STEP_MS:
            # Far above every earlier bound: Redis's wall clock stepped forward (or the reply
            # was very slow). The old bound would date returns too early, and the window
            # would let too many sends through; this one is a bound again.
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
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # lapses if Redis fails
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

    async def _renewing(self, chat_id: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run the request, renewing the chat's busy mark each second while it lasts (most
        requests end before the first renewal: a timer, no task, until then)."""
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []

        def renew() -> None:
            task = asyncio.ensure_future(self._renew(keys=self._keys[3:], args=[chat_id, IN_FLIGHT_MS]))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning
            timer[0] = loop.call_later(RENEW_S, renew)

        timer.append(loop.call_later(RENEW_S, renew))
        try:
            return await request()
        finally:
            timer[0].cancel()
