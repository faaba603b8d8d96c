"""Flood control shared by every replica, kept in Redis.

Telegram allows about 1 message/s per chat, 20/min per group and 30/s overall. Each send
reserves the next free slot for its chat and for the bot as a whole in one Lua call; the
caller sleeps until its slot. Slots are spaced, not counted, so no window is ever
exceeded, whatever the number of replicas.
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

RESERVE = """
local now = tonumber(ARGV[1])
local chat_next = tonumber(redis.call('GET', KEYS[1]) or '0')
local all_next = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(now, chat_next, all_next)
redis.call('SET', KEYS[1], slot + tonumber(ARGV[2]), 'PX', 120000)
redis.call('SET', KEYS[2], slot + tonumber(ARGV[3]), 'PX', 120000)
return slot - now
"""

PRIVATE_INTERVAL_MS = 1000  # 1 message/s per chat
GROUP_INTERVAL_MS = 3000  # 20 messages/min per group
GLOBAL_INTERVAL_MS = 34  # < 30 messages/s overall


class FloodControl:
    def __init__(self, redis: Redis, *, scale: float = 1.0) -> None:
        self._reserve = redis.register_script(RESERVE)
        self.scale = scale  # tests and benchmarks may shrink the intervals

    async def wait(self, chat_id: int) -> float:
        """Sleep until this chat may receive the next message; returns the wait in seconds."""
        interval = GROUP_INTERVAL_MS if chat_id < 0 else PRIVATE_INTERVAL_MS
        wait_ms = await self._reserve(
            keys=[f"bjb:{{flood}}:chat:{chat_id}", "bjb:{flood}:all"],
            args=[int(time.time() * 1000), int(interval * self.scale), int(GLOBAL_INTERVAL_MS * self.scale)],
        )
        wait = int(wait_ms) / 1000
        if wait > 0:
            await asyncio.sleep(wait)
        return wait
