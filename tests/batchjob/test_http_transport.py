"""The asyncio transport under httpx (batchjob/http_transport.py), against servers that
misbehave on purpose: silent, closing, slow to read, large, TLS with a certificate of
their own. The whole suite's HTTP goes through it too (the BatchJob client, Telegram)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trustme

from batchjob.http_transport import asyncio_transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def ok(body: bytes, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def client(**kw) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    timeout = kw.pop("timeout", 5.0)
    return httpx.AsyncClient(transport=asyncio_transport(max_connections=4, **kw), timeout=timeout)


async def test_requests_on_one_kept_connection_and_a_body_larger_than_the_read_buffer(monkeypatch):
    from batchjob import http_stream

    monkeypatch.setattr(http_stream, "HIGH_WATER", 4096)  # reading pauses, and must resume
    monkeypatch.setattr(http_stream, "LOW_WATER", 1024)
    big = bytes(range(256)) * 4096  # 1 MiB
    connections = 0

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(ok(big if body == b"big" else body[::-1]))
            await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server, client() as c:
        for word in (b"abc", b"hello"):
            r = await c.post(f"http://127.0.0.1:{port}/", content=word)
            assert r.content == word[::-1]
        r = await c.post(f"http://127.0.0.1:{port}/", content=b"big")
        assert r.content == big
        upload = b"x" * (8 << 20)  # more than the kernel takes at once: writing waits for room
        r = await c.post(f"http://127.0.0.1:{port}/", content=upload)
        assert len(r.content) == len(upload)
    assert connections == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used_again():
    served = 0
    closed = asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(ok(b"%d" % served))  # keep-alive promised ...
        await writer.drain()
        writer.close()  # ... then closed, as servers do at their idle timeout
        await writer.wait_closed()
        closed.set()

    server, port = await serve(handler)
    async with server, client() as c:
        assert (await c.get(f"http://127.0.0.1:{port}/")).text == "1"
        await closed.wait()
        for _ in range(5):  # the loop's next turns deliver the close to our side
            await asyncio.sleep(0)
        assert (await c.get(f"http://127.0.0.1:{port}/")).text == "2"  # a new connection, no error


async def test_a_silent_server_times_out_and_a_cancelled_read_is_a_cancellation():
    arrived, done = asyncio.Event(), asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        await read_request(reader)
        arrived.set()
        await done.wait()  # no answer while the test runs
        writer.close()

    server, port = await serve(handler)
    try:
        async with client(timeout=httpx.Timeout(5.0, read=0.05)) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(f"http://127.0.0.1:{port}/")
        arrived.clear()
        async with client(timeout=30.0) as c:
            task = asyncio.create_task(c.get(f"http://127.0.0.1:{port}/"))
            await arrived.wait()  # the request is out: the client is reading its answer
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_a_server_that_closes_mid_answer_or_refuses_is_an_httpx_error():
    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server, client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(f"http://127.0.0.1:{port}/")
    server.close()
    await server.wait_closed()
    async with client() as c:
        with pytest.raises(httpx.ConnectError):
            await c.get(f"http://127.0.0.1:{port}/")


async def test_tls_is_verified_against_the_trust_given():
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_tls)

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client refused our certificate
        writer.write(ok(b"secret"))
        await writer.drain()
        writer.close()

    server, port = await serve(handler, server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with server:
        async with client(verify=trusting) as c:
            r = await c.get(f"https://localhost:{port}/")
            assert r.text == "secret"
        async with client() as c:  # the default trust does not know this CA
            with pytest.raises(httpx.ConnectError):
                await c.get(f"https://localhost:{port}/")
