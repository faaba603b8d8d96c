"""Flood control shared by every replica, kept in Redis.

Telegram allows about 1 message/s per chat, 20/min per group and 30/s overall, and it
counts messages when they *arrive*. So spacing is measured from the moment the previous
request completed, not from when it was allowed:

- a sender first waits until its chat's next allowed time has passed;
- then, holding this process's send lock (one request in flight per process, so late
  wake-ups cannot pile up into a burst), it asks Redis once for the bot-wide slot;
- after the request completes, the chat's and the bot's next allowed times are set from
  Redis's clock. Replicas share the keys and the clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

T = TypeVar("T")

# Wait (ms) until both the chat's and the bot's next allowed times have passed; 0 when both have.
READY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ready = 0
for i = 1, #KEYS do ready = math.max(ready, tonumber(redis.call('GET', KEYS[i]) or '0')) end
if ready > now then return ready - now end
return 0
"""
# A send completed: next allowed times from now.
SENT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', 120000)
redis.call('SET', KEYS[2], now + tonumber(ARGV[2]), 'PX', 120000)
return now
"""

PRIVATE_INTERVAL_MS = 1050  # 1 message/s per chat
GROUP_INTERVAL_MS = 3050  # 20 messages/min per group
GLOBAL_INTERVAL_MS = 35  # under 30 messages/s overall


class FloodControl:
    def __init__(self, redis: Redis, *, scale: float = 1.0) -> None:
        self._ready = redis.register_script(READY)
        self._sent = redis.register_script(SENT)
        self.scale = scale  # tests and benchmarks may shrink the intervals
        self._lock = asyncio.Lock()

    def _keys(self, chat_id: int) -> list[str]:
        return [f"bjb:{{flood}}:chat:{chat_id}", "bjb:{flood}:all"]

    async def _wait_until(self, keys: list[str]) -> None:
        while (wait_ms := int(await self._ready(keys=keys))) > 0:
            # A little jitter so that many waiting senders do not ask again all at once.
            await asyncio.sleep(wait_ms / 1000 + random.uniform(0, 0.005))

    async def send(self, chat_id: int, request: Callable[[], Awaitable[T]]) -> T:
        """Perform `request` (one message to `chat_id`) within the limits."""
        keys = self._keys(chat_id)
        interval = GROUP_INTERVAL_MS if chat_id < 0 else PRIVATE_INTERVAL_MS
        await self._wait_until(keys[:1])  # the chat's own pace, without holding up others
        async with self._lock:
            await self._wait_until(keys)
            try:
                return await request()
            finally:
                await self._sent(
                    keys=keys,
                    args=[max(1, int(interval * self.scale)), max(1, int(GLOBAL_INTERVAL_MS * self.scale))],
                )
