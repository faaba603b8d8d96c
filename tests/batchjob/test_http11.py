"""HTTP/1.1 connections of batchjob/http11.py through the pool, against answers of every
framing a server may choose (chunked, up to the close, HTTP/1.0, interim 1xx, no body) and
against servers that break the protocol: garbage, a head without end, answers cut short,
bytes nobody asked for. And requests that would smuggle a second one are never sent."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys

import pytest
import trustme

from batchjob import http11
from batchjob import http_errors as errors
from batchjob.http_pool import ConnectionPool
from tests.batchjob.test_http_transport import ok, read_request, serve


async def fixed(answer: bytes, *, close: bool = False):  # type: ignore[no-untyped-def]
    """A server answering every request with `answer` (closing after it if `close`); the
    number of connections it accepted and the requests it read."""
    seen = {"connections": 0, "requests": []}

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        seen["connections"] += 1
        while True:
            try:
                seen["requests"].append(await read_request(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            writer.write(answer)
            await writer.drain()
            if close:
                break
        writer.close()

    server, port = await serve(handler)
    return server, f"http://127.0.0.1:{port}/x", seen


async def twice(answer: bytes, close: bool = False) -> tuple[list[http11.Answer], dict]:
    server, url, seen = await fixed(answer, close=close)
    pool = ConnectionPool(max_connections=1)
    async with server:
        got = [await pool.request("GET", url, headers=[]) for _ in range(2)]
        await pool.aclose()
    return got, seen


@pytest.mark.parametrize(
    ("answer", "body", "connections"),
    [
        # chunked, with a chunk extension and a trailer: reassembled, the connection kept
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            b"abcde",
            1,
        ),
        # interim answers before the real one
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n" + ok(b"real"), b"real", 1),
        # no body by its status, whatever length it names
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", b"", 1),
        (b"HTTP/1.1 304 Not Modified\r\n\r\n", b"", 1),
        # HTTP/1.0: closed after each answer unless it asks to keep the connection
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", 2),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", 1),
        # "Connection: close" is heeded
        (ok(b"bye", close=True), b"bye", 2),
    ],
)
async def test_answers_of_every_framing_are_read_whole_and_the_connection_kept_only_when_allowed(
    answer: bytes, body: bytes, connections: int
):
    got, seen = await twice(answer)
    assert [a.body for a in got] == [body, body]
    assert seen["connections"] == connections


async def test_an_answer_framed_by_the_close_ends_there_and_its_connection_is_not_reused():
    got, seen = await twice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", close=True)
    assert [a.body for a in got] == [b"until the end"] * 2
    assert seen["connections"] == 2
    assert (b"Content-Type", b"text/plain") in got[0].headers


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nz",  # two lengths
        b"HTTP/1.1 200 OK\r\nX: a\nb\r\n\r\n",  # a bare LF inside the head
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",  # not a chunk size
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        # a switch of protocols nobody asked for (httptools raises it apart from its errors)
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxyz",
    ],
)
async def test_a_malformed_answer_is_a_remote_protocol_error(answer: bytes):
    with pytest.raises(errors.RemoteProtocolError):
        await twice(answer)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "mid-answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc", "mid-answer"),
        (b"HTTP/1.1 200 OK\r\nContent-", "mid-answer"),
    ],
)
async def test_an_answer_cut_short_by_the_close_is_an_error_not_a_short_body(answer: bytes, message: str):
    with pytest.raises(errors.RemoteProtocolError, match=message):
        await twice(answer, close=True)


async def test_a_head_without_end_is_refused_after_its_limit_not_read_for_ever(monkeypatch):
    monkeypatch.setattr(http11, "MAX_HEAD", 4096)
    sent = 0
    stop = asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while not stop.is_set() and sent < 10_000_000:
            writer.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")
            sent += 1009
            try:
                await writer.drain()
            except ConnectionError:
                break
        writer.close()

    server, port = await serve(handler)
    pool = ConnectionPool(max_connections=1)
    async with server:
        with pytest.raises(errors.RemoteProtocolError, match="head is too long"):
            await pool.request("GET", f"http://127.0.0.1:{port}/", headers=[])
        stop.set()
        await pool.aclose()
    assert sent < 10_000_000


async def test_bytes_sent_after_the_answer_leave_the_answer_standing_but_the_connection_unused():
    for extra in (ok(b"unasked"), b"\x00\x01 not http"):
        got, seen = await twice(ok(b"asked") + extra)
        assert [a.body for a in got] == [b"asked", b"asked"]
        assert seen["connections"] == 2


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/x", [(b"X-Note", b"a\r\nGET /smuggled HTTP/1.1")]),
        ("/x", [(b"X-Note", b"a\nb")]),
        ("/x", [(b"Bad Name", b"v")]),
        ("/x", [(b"X-Note", b"nul\x00")]),
        ("/a b", []),  # a space in the target would end the request line early
    ],
)
async def test_a_request_that_would_break_its_framing_is_refused_before_anything_is_sent(url, headers):
    server, base, seen = await fixed(ok(b"no"))
    pool = ConnectionPool(max_connections=1)
    async with server:
        with pytest.raises(errors.LocalProtocolError):
            await pool.request("GET", base.removesuffix("/x") + url, headers=headers)
        got = await pool.request("GET", base, headers=[(b"X-Note", b"fine, with spaces")])
        await pool.aclose()
    assert got.body == b"no"
    assert len(seen["requests"]) == 1  # only the good one reached the server
    assert b"X-Note: fine, with spaces\r\n" in seen["requests"][0][0]


async def test_a_streamed_body_is_chunked_without_a_length_and_checked_against_one():
    bodies: list[bytes] = []

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if b"transfer-encoding: chunked" in head.lower():
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
            bodies.append(body)
            writer.write(ok(b"got"))
        writer.close()

    async def parts(*chunks: bytes):  # type: ignore[no-untyped-def]
        for c in chunks:
            yield c

    server, port = await serve(handler)
    url = f"http://127.0.0.1:{port}/up"
    pool = ConnectionPool(max_connections=1)
    async with server:
        await pool.request("POST", url, headers=[], content=parts(b"ab", b"", b"cde"))
        length = [(b"Content-Length", b"4")]
        await pool.request("POST", url, headers=length, content=parts(b"wx", b"yz"))
        with pytest.raises(errors.LocalProtocolError):  # 3 bytes where 4 were named
            await pool.request("POST", url, headers=length, content=parts(b"abc"))
        await pool.aclose()
    assert bodies == [b"abcde", b"wxyz"]


async def test_a_head_request_is_refused_rather_than_left_waiting_for_a_body():
    server, url, seen = await fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    pool = ConnectionPool(max_connections=1)
    async with server:
        with pytest.raises(errors.LocalProtocolError):
            await pool.request("HEAD", url, headers=[], timeouts={"read": 30})
        await pool.aclose()
    assert seen["requests"] == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1:80/x"])
async def test_only_http_urls_are_requested(url: str):
    pool = ConnectionPool(max_connections=1)
    with pytest.raises(errors.UnsupportedProtocol):
        await pool.request("GET", url, headers=[])
    await pool.aclose()


async def test_https_is_verified_against_the_pools_authorities():
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            return
        writer.write(ok(b"secret", close=True))
        await writer.drain()
        writer.close()

    server, port = await serve(handler, tls=server_tls)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with server:
        pool = ConnectionPool(max_connections=1, tls=trusting)
        assert (await pool.request("GET", f"https://127.0.0.1:{port}/", headers=[])).body == b"secret"
        await pool.aclose()
        stranger = ConnectionPool(max_connections=1, tls=ssl.create_default_context())
        with pytest.raises(errors.ConnectError):
            await stranger.request("GET", f"https://127.0.0.1:{port}/", headers=[])
        await stranger.aclose()


async def test_a_url_beyond_ascii_is_sent_percent_encoded_with_its_host_header():
    server, base, seen = await fixed(ok(b"yes"))
    port = base.split(":")[2].split("/")[0]
    pool = ConnectionPool(max_connections=1)
    async with server:
        with pytest.raises(errors.LocalProtocolError):  # a space cannot be sent as it is
            await pool.request("GET", f"http://127.0.0.1:{port}/files/文件 1.csv", headers=[])
        got = await pool.request("GET", f"http://127.0.0.1:{port}/files/文件.csv?q=ü", headers=[])
        await pool.aclose()
    assert got.body == b"yes"
    head = seen["requests"][0][0]
    assert head.startswith(b"GET /files/%E6%96%87%E4%BB%B6.csv?q=%C3%BC HTTP/1.1\r\n")
    assert b"Host: 127.0.0.1:%s\r\n" % port.encode() in head


def test_urls_are_parsed_once_into_target_origin_and_host_header():
    from batchjob.http_pool import _parsed

    assert _parsed("http://127.0.0.1:8080/p/文?q=ü") == (
        b"/p/%E6%96%87?q=%C3%BC",
        http11.Origin("http", "127.0.0.1", 8080),
        b"127.0.0.1:8080",
    )
    assert _parsed("https://API.Example.com") == (
        b"/",
        http11.Origin("https", "api.example.com", 443),
        b"api.example.com",
    )
    assert _parsed("https://[::1]:8443/x")[1:] == (http11.Origin("https", "::1", 8443), b"[::1]:8443")
    assert _parsed("http://bücher.de/")[1] == http11.Origin("http", "xn--bcher-kva.de", 80)
    with pytest.raises(errors.LocalProtocolError):
        _parsed("http://127.0.0.1:99999/")


def test_a_process_making_only_pooled_calls_never_loads_httpcore():
    """An idle bot's memory: the pool's errors and streams are its own, and httpx's client
    (which loads httpcore, h11 and anyio) is made only when a download or a proxy needs it;
    the start-up check (`probe`) goes through the pool too."""
    script = (
        "import asyncio, sys\n"
        "from batchjob.client import BatchJobClient\n"
        "from bot.telegram.request import PooledRequest\n"
        "async def main():\n"
        "    c = BatchJobClient('http://127.0.0.1:9', 't', retries=0)\n"
        "    try:\n"
        "        await c.get_job('j')\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__)\n"
        "    print((await c.probe('GET', '/v1/jobs'))[2])\n"  # the bot's check at start
        "    await c.aclose()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('httpcore', 'h11', 'anyio') if m in sys.modules))\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["Unavailable", "ConnectError", "[]"], p.stdout + p.stderr


async def test_an_answer_sent_before_the_whole_body_was_read_is_the_answer():
    """A server that refuses a large body after its head (413) and closes: the write fails,
    and the answer it sent is still read and returned, not the write's error (as httpcore
    did). A stream whose write fails and whose read holds the answer: no race of sockets."""

    class Refusing:
        def __init__(self) -> None:
            self.unread = [b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n", b"\r\nbig", b""]

        async def write(self, data: bytes, timeout: float | None = None) -> None:
            raise errors.WriteError("connection reset by peer")

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self.unread.pop(0)

        async def aclose(self) -> None:
            self.closed = True

    stream = Refusing()
    connection = http11.Connection(stream, keepalive_expiry=5)  # type: ignore[arg-type]
    got = await connection.request("POST", b"/up", [(b"Host", b"x")], b"x" * 1000, {}, 1 << 20)
    assert (got.status, got.body) == (413, b"big")
    assert not connection.is_idle()  # a connection whose write failed is not kept


async def test_an_idle_connection_is_kept_only_within_its_expiry_which_ends_before_the_servers():
    """Servers close idle connections (uvicorn and Node after 5 s): a connection kept as long
    races that close, and the request on it is lost. Kept for less by default; past its
    expiry a connection is replaced, never used."""
    from batchjob.http_pool import KEEPALIVE_S

    assert KEEPALIVE_S < 5
    server, url, seen = await fixed(ok(b"x"))
    pool = ConnectionPool(max_connections=1, keepalive_expiry=-1)  # expired as soon as idle
    async with server:
        for _ in range(3):
            assert (await pool.request("GET", url, headers=[])).body == b"x"
        await pool.aclose()
    assert seen["connections"] == 3


@pytest.mark.parametrize("answer", [ok(b"fine"), b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"])
async def test_answers_read_leave_no_cycle_for_the_collector(answer: bytes):
    """The parser holds its callbacks, bound to the answer being read: once read (or
    refused), nothing of it is left for the cyclic collector, whose passes over a burst's
    garbage paused the loop."""
    import gc

    server, url, _ = await fixed(answer)
    pool = ConnectionPool(max_connections=1)
    async with server:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept to be looked at
        try:
            for _ in range(5):
                with contextlib.suppress(errors.RemoteProtocolError):  # the malformed one
                    await pool.request("GET", url, headers=[])
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, http11._Reading)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        await pool.aclose()
    assert left == []
