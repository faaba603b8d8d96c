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
  does not push the next one back), and at most 30 sends may be in flight or have returned
  within the last second. Telegram counts a message when it arrives, between its start and
  its return, so no second can see more than 30 arrivals however late a busy process gets its
  requests out; the rate is 30 per (1 s + round trip).
- A send first takes its chat's turn (keys in the chat's own hash tag, spread over a
  cluster's nodes), then the bot-wide slot (one key: the budget is one for the whole bot).
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

# The chat's turn (its own slot): when taken, minus the time taken (ms on Redis's clock; the
# chat is busy until SENT, or ARGV[1] ms if the sender dies); otherwise the wait (ms, > 0):
# until its next allowed time, or ARGV[2] while another request to it is in flight.
CHAT_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[2]) == 1 then return tonumber(ARGV[2]) end
local ready = tonumber(redis.call('GET', KEYS[1]) or '0')
if ready > now then return ready - now end
redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[1]))
return -now
"""
# The bot-wide start: {0, wait ms} when not allowed yet; when taken, {the time taken, ms
# until the next slot} (ms on Redis's clock). First the returns of earlier sends (ARGV[7..]
# as member, time pairs) are scored their return, so one round trip per send does both.
# Two rules, both on Redis's clock, so replicas share them:
# - spacing: the next slot follows the one just due, so a late wake-up does not cost
#   throughput, but never sooner than half an interval after the actual start;
# - a window: at most ARGV[4] sends that are in flight or returned within the last window
#   (ARGV[3] ms). Telegram counts a message when it arrives, somewhere between its start and
#   its return; so however late requests leave a busy process, no window of that length can
#   see more arrivals than the limit. Entries in flight are scored their lapse time (a
#   dead sender's lapses) until their return is recorded.
GLOBAL_TAKE = """
for i = 7, #ARGV, 2 do redis.call('ZADD', KEYS[2], 'XX', tonumber(ARGV[i + 1]), ARGV[i]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = tonumber(redis.call('GET', KEYS[1]) or '0')
if due > now then return {0, due - now} end
local window, limit, lapse = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= limit then
  -- Full: the oldest return leaves the window at a known time; if every entry is still in
  -- flight (scored its lapse), one may return any moment: ask again soon.
  local oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  if oldest <= now then return {0, oldest + window - now + 1} end
  return {0, tonumber(ARGV[6])}
end
local interval = tonumber(ARGV[1])
local base = math.max(due, now - math.floor(interval / 2))
redis.call('SET', KEYS[1], base + interval, 'PX', 120000)
redis.call('ZADD', KEYS[2], now + lapse, ARGV[2])
redis.call('PEXPIRE', KEYS[2], lapse + window)
local next = base + interval - now
if redis.call('ZCARD', KEYS[2]) >= limit then  -- full now: the next start waits for the oldest return too
  local oldest = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  if oldest <= now then next = math.max(next, oldest + window - now + 1) end
end
return {now, next}
"""
# Returns of sends (ARGV as member, time pairs) when no start carries them soon.
GLOBAL_DONE = """
for i = 1, #ARGV, 2 do redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[i + 1]), ARGV[i]) end
return 1
"""
# The chat's request returned: no longer busy, next allowed time from now.
SENT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', 120000)
redis.call('DEL', KEYS[2])
return now
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
    trips: the scripts on Redis decide every start. Per send: the chat's turn, the bot-wide
    start (carrying earlier sends' returns) and the chat's return, three round trips."""

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
        self._slot = [self.k.flood_all_of(limits.name), self.k.flood_log_of(limits.name)]
        self.r = redis
        self._chat_take = redis.register_script(CHAT_TAKE)
        self._global_take = redis.register_script(GLOBAL_TAKE)
        self._global_done = redis.register_script(GLOBAL_DONE)
        self._sent = redis.register_script(SENT)
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
        self._returns: list[str | int] = []  # member, Redis ms: returns not recorded yet
        self._flush: asyncio.TimerHandle | None = None
        # Called with (chat, what, ms on Redis's clock) for "chat" (the chat's turn taken),
        # "start" (the bot-wide slot taken), "sent" (the chat's request returned) and
        # "done" (returned, as the bot-wide window counts it): the times the limits were
        # decided on, for tests and benchmarks to count against the limits.
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
        # The chat's keys live in the chat's slot, the bot-wide one in its own: on a cluster,
        # only the one bot-wide command per send goes to a single node.
        keys = self.k.flood_chat(chat_id)
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
                took = int(await self._chat_take(keys=keys, args=[IN_FLIGHT_MS, BUSY_POLL_MS]))
                if took <= 0:
                    self._observe(chat_id, "chat", -took)
                    await self._take_slot(chat_id, member)
                    self._in_flight[chat_id] = mine
            finally:
                self._turns.release()
            if took <= 0:
                break
            # Another sender (elsewhere) holds the chat, or wrote to it last: wait and ask again.
            await self._sleep_ms(took)
        loop = asyncio.get_running_loop()
        try:
            return await self._renewing(keys[1], request)
        finally:
            returned = loop.time()
            self._record_return(chat_id, member, returned)
            try:
                sent = int(await self._sent(keys=keys, args=[interval]))
                self._ready[chat_id] = loop.time() + interval / 1000
                self._observe(chat_id, "sent", sent)
            finally:
                # Ours unless the chat's mark lapsed mid-request and another send took it.
                if self._in_flight.get(chat_id) is mine:
                    del self._in_flight[chat_id]
                mine.set()
                if len(self._ready) > 10_000:  # forget chats whose pause is over
                    now = loop.time()
                    self._ready = {c: t for c, t in self._ready.items() if t > now}

    async def _take_slot(self, chat_id: str, member: str) -> None:
        lim = self.limits
        global_ms = max(1, int(lim.global_ms * self.scale))
        window_ms = max(1, int(lim.window_ms * self.scale))
        args: list[str | int] = [global_ms, member, window_ms, lim.window_limit, LAPSE_MS, max(global_ms, 20)]
        loop = asyncio.get_running_loop()
        while True:
            if (early := self._slot_due - loop.time()) > 0:
                await asyncio.sleep(early)  # the slot this process saw set is not due yet
            returns, self._returns = self._returns, []
            before = loop.time()
            try:
                now, wait_ms = (int(x) for x in await self._global_take(keys=self._slot, args=args + returns))
            except BaseException:
                self._returns = returns + self._returns  # recorded again later (ZADD XX is idempotent)
                raise
            after = loop.time()
            if now:
                self._learn_offset(now - before * 1000, before)
                self._slot_due = after + wait_ms / 1000  # never early: Redis's now was before `after`
                self._observe(chat_id, "start", now)
                return
            await asyncio.sleep(wait_ms / 1000)

    def _learn_offset(self, sample: float, at: float) -> None:
        """Each start's reply bounds the offset from above (Redis read its clock after
        `before`); the least bound is the closest. An older bound is widened by the most the
        two clocks can drift apart since, so it stays one."""
        drifted = self._offset_hi + (at - self._offset_at) * DRIFT_MS_PER_S if self._offset_at else sample
        self._offset_hi, self._offset_at = min(sample, drifted), at

    def _record_return(self, chat_id: str, member: str, returned: float) -> None:
        """The send returned (loop time): recorded with the next start, or on its own soon."""
        at = int(returned * 1000 + self._offset_hi) + 1  # +1: Redis's TIME is cut to the ms
        self._observe(chat_id, "done", at)
        self._returns += [member, at]
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(DONE_FLUSH_S, self._flush_returns)

    def _flush_returns(self) -> None:
        self._flush = None
        returns, self._returns = self._returns, []
        if returns:
            task = asyncio.ensure_future(self._global_done(keys=self._slot[1:], args=returns))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # lapses if Redis fails

    def _observe(self, chat_id: str, what: str, ms: int) -> None:
        if self.observer is not None:
            self.observer(chat_id, what, ms)

    async def _renewing(self, busy: str, request: Callable[[], Awaitable[T]]) -> T:
        """Run the request, renewing the chat's busy mark each second while it lasts (most
        requests end before the first renewal: a timer, no task, until then)."""
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []

        def renew() -> None:
            task = asyncio.ensure_future(self.r.pexpire(busy, IN_FLIGHT_MS))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved: no warning
            timer[0] = loop.call_later(RENEW_S, renew)

        timer.append(loop.call_later(RENEW_S, renew))
        try:
            return await request()
        finally:
            timer[0].cancel()
