"""The connection pool of batchjob/http_pool.py and the coalesced writes under it, against
servers that misbehave on purpose: closing idle connections, silent, answering too much."""

from __future__ import annotations

import asyncio

import pytest

from batchjob import http_errors as errors
from batchjob.http_pool import ConnectionPool, ResponseTooLarge
from batchjob.http_stream import AsyncioStream, _Protocol
from tests.batchjob.test_http_transport import ok, read_request, serve

HEADERS = [(b"Content-Type", b"text/plain")]


async def each_request(reader, writer, answer) -> None:  # type: ignore[no-untyped-def]
    """Answer each request on a connection with answer(head, body) until the client leaves."""
    while True:
        try:
            head, body = await read_request(reader)
        except asyncio.IncompleteReadError:
            break
        writer.write(answer(head, body))
        await writer.drain()
    writer.close()


async def test_requests_share_a_kept_connection_whose_head_and_body_leave_together():
    connections, heads = 0, []

    def answer(head: bytes, body: bytes) -> bytes:
        heads.append(head)
        return ok(body[::-1])

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal connections
        connections += 1
        await each_request(reader, writer, answer)

    server, port = await serve(handler)
    pool = ConnectionPool(max_connections=4)
    async with server:
        for word in (b"abc", b"hello", b"xyz"):
            answer = await pool.request("POST", f"http://127.0.0.1:{port}/p", headers=HEADERS, content=word)
            assert (answer.status, answer.body) == (200, word[::-1])
        got = await pool.request("GET", f"http://127.0.0.1:{port}/file", headers=[])
        await pool.aclose()
    assert connections == 1
    assert b"host: 127.0.0.1:%d" % port in heads[0].lower()
    assert b"content-length: 3" in heads[0].lower()
    assert b"content-length" not in heads[-1].lower()  # a GET without a body names no length
    assert got.body == b""


def test_small_writes_leave_in_one_send_when_the_answer_is_read():
    sent: list[bytes] = []

    class Transport(asyncio.Transport):
        def write(self, data: bytes) -> None:  # type: ignore[override]
            sent.append(bytes(data))

        def is_closing(self) -> bool:
            return False

    async def scenario() -> None:
        protocol = _Protocol()
        stream = AsyncioStream(Transport(), protocol)
        await stream.write(b"POST / HTTP/1.1\r\n\r\n")
        await stream.write(b"body")
        assert sent == []  # held until the answer is read
        protocol.data_received(b"HTTP/1.1 200 OK\r\n")
        assert await stream.read(100) == b"HTTP/1.1 200 OK\r\n"
        assert sent == [b"POST / HTTP/1.1\r\n\r\nbody"]
        await stream.write(b"x" * (1 << 17))  # a large write leaves at once
        assert len(sent) == 2

    asyncio.run(scenario())


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error():
    served = 0
    closed = asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(ok(b"one"))
        await writer.drain()
        writer.close()  # keep-alive refused after the fact: closed while idle
        await writer.wait_closed()
        closed.set()

    server, port = await serve(handler)
    pool = ConnectionPool(max_connections=2)
    async with server:
        assert (await pool.request("GET", f"http://127.0.0.1:{port}/", headers=[])).body == b"one"
        await closed.wait()
        for _ in range(5):  # the loop's next turns deliver the close to our side
            await asyncio.sleep(0)
        assert (await pool.request("GET", f"http://127.0.0.1:{port}/", headers=[])).body == b"one"
        await pool.aclose()
    assert served == 2


async def test_a_full_pool_times_out_with_nothing_sent_and_a_cancelled_request_frees_its_slot():
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        await read_request(reader)
        arrived.set()
        await release.wait()  # silent until told
        writer.close()

    server, port = await serve(handler)
    pool = ConnectionPool(max_connections=1)
    url = f"http://127.0.0.1:{port}/"
    async with server:
        first = asyncio.ensure_future(pool.request("GET", url, headers=[], timeouts={"read": 30}))
        await arrived.wait()
        with pytest.raises(errors.PoolTimeout):
            await pool.request("GET", url, headers=[], timeouts={"pool": 0.05})
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(errors.ReadTimeout):  # the slot is free again; the server still silent
            await pool.request("GET", url, headers=[], timeouts={"pool": 1, "read": 0.05})
        release.set()
        await pool.aclose()


async def test_an_answer_longer_than_the_limit_is_refused_and_its_connection_dropped():
    connections = 0
    big = b"x" * (1 << 20)

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal connections
        connections += 1
        await each_request(reader, writer, lambda _, body: ok(big if body == b"big" else b"small"))

    server, port = await serve(handler)
    pool = ConnectionPool(max_connections=2, max_body=64 * 1024)
    url = f"http://127.0.0.1:{port}/"
    async with server:
        with pytest.raises(ResponseTooLarge):
            await pool.request("POST", url, headers=HEADERS, content=b"big")
        assert (await pool.request("POST", url, headers=HEADERS, content=b"s")).body == b"small"
        await pool.aclose()
    assert connections == 2  # the one cut short was not used again


async def test_a_refused_connection_is_a_connect_error():
    server, port = await serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    pool = ConnectionPool(max_connections=1)
    with pytest.raises(errors.ConnectError):
        await pool.request("GET", f"http://127.0.0.1:{port}/", headers=[])
    await pool.aclose()
