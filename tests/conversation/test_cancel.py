"""A loop that retries on errors ends when cancelled, even when a library turns the
CancelledError into another error (redis-py's cluster client can)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.api.callbacks import Callbacks
from conversation.keys import Keys


async def test_the_callback_sender_stops_when_a_cancel_comes_out_as_a_connection_error(redis):
    callbacks = Callbacks(redis, Keys(prefix="cancel-test"))
    inside = asyncio.Event()

    async def take(now: int, limit: int) -> list[str]:
        inside.set()
        try:
            await asyncio.Event().wait()  # a command that has not answered yet
        except asyncio.CancelledError:
            raise RedisConnectionError("connection dropped") from None  # the cancel, swallowed
        return []

    callbacks._take = take  # type: ignore[method-assign]
    task = asyncio.create_task(callbacks.run(every_s=0.01))
    await asyncio.wait_for(inside.wait(), 10)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)  # bounded: the old loop retried for ever
    assert task in done and task.cancelled()


async def test_check_cancelled_raises_only_for_a_task_asked_to_stop():
    from conversation.cancel import check_cancelled

    check_cancelled()  # not cancelled: nothing happens
    seen: list[str] = []

    async def loop() -> None:
        while True:
            try:
                await asyncio.Event().wait()  # a command that has not answered yet
            except asyncio.CancelledError:
                seen.append("swallowed")  # as a library might
            check_cancelled()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop is inside its command
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # ends: the loop saw the request though the error was swallowed
    assert seen == ["swallowed"]
