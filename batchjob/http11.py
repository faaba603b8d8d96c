"""One HTTP/1.1 connection: a request written in one send, its answer read by llhttp.

h11 (under httpcore) framed every request and answer in Python: 169-231 us of client CPU
a request in bench/http_client.py, against 51-64 here, and a quarter of the bot's CPU in a
burst. The answer is parsed by httptools (llhttp, Node's parser, fuzzed upstream; uvicorn
reads requests with it); the request side is small enough to write here: a head of
checked fields, then a body of known length or chunked. The socket layer stays
`http_stream.AsyncioStream` (timeouts, TLS, coalesced writes); errors are `http_errors`,
named as httpcore's.

A server is untrusted like any input: a head longer than `MAX_HEAD`, a body past the
caller's limit, bytes it sent unasked, or an answer cut short end the connection with an
error; only an answer that ended cleanly, with keep-alive, leaves it reusable.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterable
from typing import NamedTuple

import httptools

from batchjob import http_errors as errors
from batchjob.http_stream import AsyncioStream, connect_tcp

MAX_HEAD = 64 * 1024  # bytes of status line and headers before an answer is refused
READ_SIZE = 64 * 1024
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_NO_BODY = frozenset((204, 304))


class ResponseTooLarge(errors.ReadError):
    """The answer's body ran past the caller's limit."""


class Origin(NamedTuple):
    scheme: str  # "http" or "https"
    host: str  # as a socket takes it: an IDNA name, an IPv4 or a bare IPv6 address
    port: int


class Answer(NamedTuple):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Reading:
    """httptools' callbacks for one answer (1xx interim answers are skipped)."""

    __slots__ = (
        "chunks",
        "complete",
        "framed",
        "head_done",
        "headers",
        "keep_alive",
        "limit",
        "parser",
        "size",
        "status",
        "too_large",
        "unasked",
    )

    def __init__(self, limit: int) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.limit = limit
        self.unasked = False
        self.complete = False
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0
        self.framed = False  # a Content-Length or Transfer-Encoding: not read up to the close
        self.head_done = False
        self.keep_alive = False
        self.too_large = False

    def on_message_begin(self) -> None:
        if self.complete:  # more than the one answer asked for
            self.unasked = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        self.headers.append((name, value))
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        self.head_done = True
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        if self.complete:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.too_large = True  # raised after feed_data: httptools wraps a callback's error
        else:
            self.chunks.append(data)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # "Continue" and the like: the answer follows
            self._reset()
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


class Connection:
    """A connection to one origin; `request` may be called again once it `is_idle()`."""

    def __init__(self, stream: AsyncioStream, keepalive_expiry: float) -> None:
        self._stream = stream
        self._expiry = keepalive_expiry
        self._idle_since: float | None = None  # None: in use, or closed

    @classmethod
    async def open(
        cls, origin: Origin, *, tls: ssl.SSLContext, timeout: float | None, keepalive_expiry: float
    ) -> Connection:
        scheme, host, port = origin  # http or https: `http_pool._parsed` refused the rest
        stream = await connect_tcp(host, port, timeout)
        if scheme == "https":
            stream = await stream.start_tls(tls, server_hostname=host, timeout=timeout)
        return cls(stream, keepalive_expiry)

    def is_idle(self) -> bool:
        return self._idle_since is not None

    def has_expired(self) -> bool:
        """Kept too long, or the peer closed it (or sent something unasked) meanwhile."""
        if self._idle_since is None:
            return True
        stale = asyncio.get_running_loop().time() - self._idle_since > self._expiry
        return stale or bool(self._stream.get_extra_info("is_readable"))

    async def aclose(self) -> None:
        self._idle_since = None
        await self._stream.aclose()

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes],
        timeouts: dict[str, float | None],
        max_body: int,
    ) -> Answer:
        """Send one request, read its whole answer. On any error the caller closes this
        connection: its state is unknown."""
        if method == "HEAD":  # its answer names a length with no body: llhttp would wait for one
            raise errors.LocalProtocolError("HEAD is not sent through the pool")
        self._idle_since = None
        write_timeout = timeouts.get("write")
        sent = False
        try:
            if isinstance(content, bytes):
                await self._stream.write(_head(method, target, headers) + content, write_timeout)
            else:
                await self._write_stream(method, target, headers, content, write_timeout)
            sent = True
        except errors.WriteError:
            pass  # a server may refuse a body half-way and still answer (413, as httpcore reads it)
        reading = await self._read(timeouts.get("read"), max_body)
        if sent and reading.keep_alive and not reading.unasked:
            self._idle_since = asyncio.get_running_loop().time()
        else:
            await self._stream.aclose()
        return Answer(reading.status, reading.headers, b"".join(reading.chunks))

    async def _write_stream(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content: AsyncIterable[bytes],
        timeout: float | None,
    ) -> None:
        """A body from an iterator: as long as its Content-Length says (checked: a body
        of another length would leave the server reading the next request as this one's
        rest), or chunked when none is named."""
        named = next((v for n, v in headers if n.lower() == b"content-length"), None)
        chunked = named is None
        if chunked:
            headers = [*headers, (b"Transfer-Encoding", b"chunked")]
        await self._stream.write(_head(method, target, headers), timeout)
        sent = 0
        async for chunk in content:
            if not chunk:
                continue
            sent += len(chunk)
            await self._stream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk, timeout)
        if chunked:
            await self._stream.write(b"0\r\n\r\n", timeout)
        elif named is not None and sent != int(named):
            raise errors.LocalProtocolError("the body's length is not its Content-Length")

    async def _read(self, timeout: float | None, max_body: int) -> _Reading:
        reading = _Reading(max_body)
        try:
            return await self._read_into(reading, timeout, max_body)
        finally:
            # The parser holds its callbacks, bound to `reading`: a cycle left for the
            # collector at every request, unless the parser goes once the answer is read.
            del reading.parser

    async def _read_into(self, reading: _Reading, timeout: float | None, max_body: int) -> _Reading:
        head = 0
        while not reading.complete:
            data = await self._stream.read(READ_SIZE, timeout)
            if not data:
                return _at_close(reading, head)
            if not reading.head_done:
                head += len(data)
            try:
                reading.parser.feed_data(data)
            except httptools.HttpParserUpgrade:  # not an HttpParserError: caught on its own
                raise errors.RemoteProtocolError("the server switched protocols unasked") from None
            except httptools.HttpParserError as e:
                if reading.complete:  # garbage after a whole answer: the answer stands
                    reading.unasked = True
                    break
                raise errors.RemoteProtocolError(f"malformed answer: {str(e)[:80]}") from None
            if reading.too_large:
                raise ResponseTooLarge(f"the answer is longer than {max_body} bytes")
            if not reading.head_done and head > MAX_HEAD:
                raise errors.RemoteProtocolError("the answer's head is too long")
        return reading


def _at_close(reading: _Reading, head: int) -> _Reading:
    """The peer closed the connection: an answer framed by the close ends here; anything
    else was cut short."""
    if head == 0:
        raise errors.RemoteProtocolError("Server disconnected without sending a response.")
    if not reading.head_done or reading.framed or reading.status in _NO_BODY:
        raise errors.RemoteProtocolError("the server closed the connection mid-answer")
    reading.keep_alive = False
    reading.complete = True
    return reading


def _head(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and fields, refused (as h11 did) when a field or the target would
    break the framing: a CR or LF in a value is a request smuggled into this one."""
    if not _TARGET.fullmatch(target):
        raise errors.LocalProtocolError("the request target is not printable ASCII")
    lines = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise errors.LocalProtocolError("a header's name or value is not allowed")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)
