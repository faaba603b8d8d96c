"""Commands issued together share a round trip; each caller still gets its own answer or error,
in its own order, and writes nobody waits for are neither lost nor overtaken."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from conversation.autopipeline import AutoPipelining, later
from conversation.store import in_process_redis, redis_from_url


@pytest.fixture
async def r(redis):
    if not isinstance(redis, AutoPipelining):
        pytest.skip("a Redis Cluster client sends each command on its own")
    await redis.ping()  # a new connection's handshake is writes of its own: done before counting
    return redis


@contextlib.contextmanager
def round_trips() -> Iterator[list[int]]:
    """Counts the writes that reach a connection: a command sent alone, or a pipeline."""
    count = [0]
    orig = AbstractConnection.send_packed_command

    async def send(self, *a, **kw):  # type: ignore[no-untyped-def]
        count[0] += 1
        return await orig(self, *a, **kw)

    AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield count
    finally:
        AbstractConnection.send_packed_command = orig  # type: ignore[method-assign]


def text(v: object) -> object:
    return v.decode() if isinstance(v, bytes) else v


async def test_commands_of_concurrent_tasks_share_one_round_trip(r, own_keys):
    keys = [f"{own_keys.prefix}:n{i}" for i in range(50)]
    with round_trips() as trips:
        answers = await asyncio.gather(*(r.incrby(k, i) for i, k in enumerate(keys)))
    assert answers == list(range(50))
    assert trips[0] == 1


async def test_each_task_reads_its_own_writes_in_order(r, own_keys):
    async def task(i: int) -> list[object]:
        k = f"{own_keys.prefix}:seq{i}"
        seen = []
        for step in range(5):
            await r.rpush(k, f"{i}.{step}")
            seen.append(await r.llen(k))
        return [*seen, [text(x) for x in await r.lrange(k, 0, -1)]]

    results = await asyncio.gather(*(task(i) for i in range(20)))
    for i, got in enumerate(results):
        assert got == [1, 2, 3, 4, 5, [f"{i}.{s}" for s in range(5)]]


async def test_an_error_reaches_only_the_command_that_caused_it(r, own_keys):
    s, other = f"{own_keys.prefix}:s", f"{own_keys.prefix}:o"
    await r.set(s, "a string")
    with round_trips() as trips:
        got = await asyncio.gather(r.lpush(s, "x"), r.set(other, "1"), r.get(s), return_exceptions=True)
    assert trips[0] == 1
    assert isinstance(got[0], ResponseError) and "WRONGTYPE" in str(got[0])
    assert got[1] is True and text(got[2]) == "a string"


async def test_a_pipeline_joins_the_shared_round_trip_and_keeps_its_errors(r, own_keys):
    s, n = f"{own_keys.prefix}:s", f"{own_keys.prefix}:n"
    await r.set(s, "a string")

    async def piped(raise_on_error: bool) -> list[object]:
        async with r.pipeline(transaction=False) as p:
            p.incr(n)
            p.lpush(s, "x")
            p.get(s)
            return await p.execute(raise_on_error=raise_on_error)

    async def alone() -> object:
        return await r.get(s)

    with round_trips() as trips:
        quiet, loud, one = await asyncio.gather(piped(False), piped(True), alone(), return_exceptions=True)
    assert trips[0] == 1
    assert quiet[0] in (1, 2) and isinstance(quiet[1], ResponseError) and text(quiet[2]) == "a string"
    assert isinstance(loud, ResponseError)  # raise_on_error: the pipeline's first error
    assert text(one) == "a string"
    assert int(await r.get(n)) == 2  # both pipelines ran whole


async def test_a_write_nobody_waits_for_rides_with_the_next_command(r, own_keys):
    k = f"{own_keys.prefix}:later"
    with round_trips() as trips:
        await later(r).set(k, "v")
        assert trips[0] == 0  # queued, not sent: the caller did not wait
        assert text(await r.get(k)) == "v"  # sent first, in the same round trip
    assert trips[0] == 1


async def test_a_write_nobody_waits_for_goes_on_its_own_when_nothing_follows(r, own_keys):
    k = f"{own_keys.prefix}:alone"
    await later(r).set(k, "v")

    async def arrived() -> object:  # read on a connection of its own, past the queue
        while (v := await Redis.execute_command(r, "GET", k)) is None:
            pass
        return v

    assert text(await asyncio.wait_for(arrived(), 10)) == "v"  # without company, it still went


async def test_a_transaction_runs_after_the_writes_queued_before_it(r, own_keys):
    k = f"{own_keys.prefix}:tx"
    await later(r).set(k, "queued first")
    async with r.pipeline(transaction=True) as p:
        p.get(k)
        p.set(k, "then the transaction")
        got = await p.execute()
    assert text(got[0]) == "queued first"
    assert text(await r.get(k)) == "then the transaction"


async def test_a_command_cancelled_before_its_turn_is_never_sent(r, own_keys):
    k = f"{own_keys.prefix}:cancelled"
    pending = r.set(k, "should not be written")
    pending.cancel()
    assert await r.get(k) is None


async def test_scripts_are_loaded_again_when_the_server_forgot_them(own_keys):
    r = in_process_redis()  # its own server: flushing its scripts touches nobody else's
    try:
        add = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        k = f"{own_keys.prefix}:script"
        assert await add(keys=[k], args=[2]) == 2
        await r.script_flush()
        assert await asyncio.gather(add(keys=[k], args=[3]), add(keys=[k], args=[4])) in ([5, 9], [6, 9])
    finally:
        await r.aclose()


async def test_a_failed_write_fails_every_caller_in_it():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = redis_from_url(f"redis://127.0.0.1:{port}/0")
    try:
        got = await asyncio.gather(r.get("a"), r.set("b", "1"), r.incr("c"), return_exceptions=True)
        assert all(isinstance(g, RedisConnectionError) for g in got), got
    finally:
        await r.aclose()


async def test_callers_of_a_send_stopped_before_its_round_trip_are_stopped_too(r, own_keys):
    """The send's task cancelled before it ran (the loop closing): nobody waits for ever."""
    pending = [asyncio.ensure_future(r.get(f"{own_keys.prefix}:{i}")) for i in range(3)]
    for _ in range(10):  # a few turns: the callers queue, then the flush makes the send
        if r._batch.in_flight:
            break
        await asyncio.sleep(0)
    (send,) = r._batch.in_flight
    send.cancel()
    got = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 10)
    assert all(isinstance(g, asyncio.CancelledError) for g in got), got
    assert await r.set(f"{own_keys.prefix}:after", "1") is True  # the client goes on


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_a_kept_connection_the_server_dropped_is_replaced_and_its_batch_answered(tmp_path, own_keys):
    """A batch goes out on a connection kept from the last one; when the server has closed
    it meanwhile (a restart, CLIENT KILL, an idle timeout), the batch is sent again through
    redis-py's own path, which reconnects: every caller gets its answer, none an error."""
    from tests.conversation.test_redis_faults import OwnRedis

    own = OwnRedis(tmp_path)
    own.start()
    r = redis_from_url(own.url)
    try:
        k = f"{own_keys.prefix}:kept"
        assert await r.set(k, "before") is True
        assert len(r._kept) == 1  # the connection that carried it is kept for the next batch
        own.kill()
        own.start()  # same directory: the AOF brings the value back; the kept socket is dead
        with round_trips() as trips:
            got = await asyncio.gather(r.get(k), r.incr(f"{k}:n"), r.set(f"{k}:2", "x"))
        assert [text(got[0]), got[1], got[2]] == ["before", 1, True]
        assert trips[0] >= 2  # the write on the dead connection, then the one that was answered
        assert await r.get(f"{k}:2") == b"x"
    finally:
        await r.aclose()
        own.kill()
