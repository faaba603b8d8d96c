"""Flood control shared by every replica, kept in Redis.

Telegram allows about 1 message/s per chat, 20/min per group and 30/s overall. Right
before each send, one Lua call asks "may this chat get a message now?" against Redis's own
clock: if both the chat's and the bot's intervals have passed, it records the send and says
yes; otherwise it says how long to wait, and the caller asks again after that. Permission
is taken at send time, not booked ahead, so a busy event loop that wakes several senders
late cannot turn into a burst; and replicas share the same keys and clock.
"""

from __future__ import annotations

import asyncio
import random

from redis.asyncio import Redis

ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chat_next = tonumber(redis.call('GET', KEYS[1]) or '0')
local all_next = tonumber(redis.call('GET', KEYS[2]) or '0')
local ready = math.max(chat_next, all_next)
if ready > now then return ready - now end
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', 120000)
redis.call('SET', KEYS[2], now + tonumber(ARGV[2]), 'PX', 120000)
return 0
"""

# Slots are reserved before the request travels, so each limit keeps a margin for the
# jitter between reserving a slot and Telegram receiving the message.
PRIVATE_INTERVAL_MS = 1100  # 1 message/s per chat
GROUP_INTERVAL_MS = 3100  # 20 messages/min per group
GLOBAL_INTERVAL_MS = 40  # 25/s, under 30 messages/s overall


class FloodControl:
    def __init__(self, redis: Redis, *, scale: float = 1.0) -> None:
        self._acquire = redis.register_script(ACQUIRE)
        self.scale = scale  # tests and benchmarks may shrink the intervals

    async def wait(self, chat_id: int) -> float:
        """Return once this chat may receive a message (recorded as sent); the seconds waited."""
        interval = GROUP_INTERVAL_MS if chat_id < 0 else PRIVATE_INTERVAL_MS
        keys = [f"bjb:{{flood}}:chat:{chat_id}", "bjb:{flood}:all"]
        args = [max(1, int(interval * self.scale)), max(1, int(GLOBAL_INTERVAL_MS * self.scale))]
        waited = 0.0
        while True:
            wait_ms = int(await self._acquire(keys=keys, args=args))
            if wait_ms <= 0:
                return waited
            # A little jitter so that many waiting senders do not ask again all at once.
            pause = wait_ms / 1000 + random.uniform(0, 0.01)
            waited += pause
            await asyncio.sleep(pause)
