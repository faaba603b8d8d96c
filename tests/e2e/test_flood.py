"""Flood control: sends are spaced per chat and overall, measured from completion."""

from __future__ import annotations

import asyncio
import itertools

from bot.telegram.flood import GLOBAL_INTERVAL_MS, PRIVATE_INTERVAL_MS, FloodControl


async def test_sends_are_spaced_per_chat_and_overall(redis):
    flood = FloodControl(redis, scale=0.05)  # 52 ms per chat, ~2 ms overall
    arrivals: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()

    async def request(chat: int) -> None:
        await asyncio.sleep(0.003)  # the request travelling
        arrivals.append((chat, loop.time()))

    async def sender(chat: int, n: int) -> None:
        for _ in range(n):
            await flood.send(chat, lambda chat=chat: request(chat))

    await asyncio.gather(*(sender(c, 5) for c in (1, 2, 3)))
    assert len(arrivals) == 15
    for chat in (1, 2, 3):
        times = [t for c, t in arrivals if c == chat]
        assert all(b - a >= PRIVATE_INTERVAL_MS * 0.05 / 1000 for a, b in itertools.pairwise(times))
    overall = sorted(t for _, t in arrivals)
    assert all(b - a >= GLOBAL_INTERVAL_MS * 0.05 / 1000 for a, b in itertools.pairwise(overall))


def test_secrets_are_redacted_from_every_log_record(caplog):
    import logging

    from bot.redact import redact_secrets

    redact_secrets("very-secret-token-123")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("httpx").info("HTTP Request: POST %s", "http://x/botvery-secret-token-123/getMe")
    assert "very-secret-token-123" not in caplog.text and "bot***/getMe" in caplog.text
