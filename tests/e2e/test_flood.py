"""Flood control: permission is granted at send time, spaced per chat and overall."""

from __future__ import annotations

import asyncio
import itertools

from bot.telegram.flood import GLOBAL_INTERVAL_MS, PRIVATE_INTERVAL_MS, FloodControl


async def test_sends_are_spaced_per_chat_and_overall(redis):
    flood = FloodControl(redis, scale=0.05)  # 55 ms per chat, 2 ms overall
    granted: list[tuple[str, int]] = []

    async def sender(chat: int, n: int) -> None:
        for _ in range(n):
            await flood.wait(chat)
            t = await redis.time()
            granted.append((f"{chat}", t[0] * 1000 + t[1] // 1000))

    await asyncio.gather(sender(1, 5), sender(2, 5), sender(3, 5))
    for chat in ("1", "2", "3"):
        times = sorted(t for c, t in granted if c == chat)
        assert all(
            b - a >= int(PRIVATE_INTERVAL_MS * 0.05) - 1 for a, b in itertools.pairwise(times)
        )
    overall = sorted(t for _, t in granted)
    assert all(
        b - a >= int(GLOBAL_INTERVAL_MS * 0.05) - 1 for a, b in itertools.pairwise(overall)
    )
