"""A small pool of HTTP/1.1 connections for calls that need no more than a request and its
whole answer (the Telegram Bot API's calls and file downloads, the BatchJob API's calls).

httpx's client, cookie jar and connection pool cost three quarters of a request's CPU
(measured: 1.2 ms a request through httpx, 0.33 ms straight on httpcore's connection, 20 in
flight), and httpcore's connection most of the rest: the connection is `http11.Connection`
(llhttp's parsing on `AsyncioStream`), and this module keeps a bounded set of them, idle
ones per origin. Errors are httpcore's classes.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterable

import httpcore
import httpx

from batchjob.http11 import Answer, Connection, ResponseTooLarge
from batchjob.http_transport import AsyncioBackend, default_tls

__all__ = ["Answer", "ConnectionPool", "ResponseTooLarge", "as_httpx_error", "proxied"]

Origin = tuple[bytes, bytes, int]
MAX_BODY = 64 * 1024 * 1024  # an answer longer than this is refused, not read into memory


class ConnectionPool:
    """At most `max_connections` requests in flight (a request waits up to its pool timeout
    for one to end: `httpcore.PoolTimeout`, nothing sent); connections kept alive per
    origin for `keepalive_expiry` seconds. Errors are httpcore's."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = 5.0,
        tls: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._tls = tls or default_tls()
        self._tls.set_alpn_protocols(["http/1.1"])  # as httpcore did on each connection
        self._max_body = max_body
        self._backend = AsyncioBackend()
        self._idle: dict[Origin, list[Connection]] = {}
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[bytes, bytes]],
        content: bytes | AsyncIterable[bytes] = b"",
        timeouts: dict[str, float | None] | None = None,
    ) -> Answer:
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        timeouts = timeouts or {}
        target, origin, host = _parsed(url)
        headers = [(b"Host", host), *headers, *_length(method, content)]
        if self._slots.locked():  # only a wait needs its clock (a timer a request: ~7 us)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpcore.PoolTimeout("no connection came free in time") from None
        else:
            await self._slots.acquire()
        try:
            connection = self._take(origin) or await Connection.open(
                origin,
                tls=self._tls,
                backend=self._backend,
                timeout=timeouts.get("connect"),
                keepalive_expiry=self._expiry,
            )
            try:
                answer = await connection.request(method, target, headers, content, timeouts, self._max_body)
            except BaseException:
                await connection.aclose()  # cut short: its state is unknown
                raise
            self._give_back(origin, connection)
            return answer
        finally:
            self._slots.release()

    def _take(self, origin: httpcore.Origin) -> Connection | None:
        """The most recently used idle connection that is still good, if any. One the peer
        closed (or sent something unasked) has expired and is dropped."""
        idle = self._idle.get(_key(origin))
        while idle:
            connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            _close_soon(connection)
        return None

    def _give_back(self, origin: httpcore.Origin, connection: Connection) -> None:
        idle = self._idle.setdefault(_key(origin), [])
        if self._closed or not connection.is_idle() or len(idle) >= self._max:
            _close_soon(connection)
        else:
            idle.append(connection)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()


def proxied(url: str) -> bool:
    """Whether the environment names a proxy for `url` (HTTPS_PROXY, ALL_PROXY...; NO_PROXY
    exempting it): such calls keep httpx's client, which goes through it; this pool does not."""
    proxies = urllib.request.getproxies()
    parsed = urllib.parse.urlsplit(url)
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parsed.hostname or "")


@functools.lru_cache(maxsize=512)
def _parsed(url: str) -> tuple[bytes, httpcore.Origin, bytes]:
    """The request target, the origin and the Host header; the same few URLs (the Bot API's
    methods) come again and again, and parsing one took ~9 us."""
    if not url.lower().startswith(("http://", "https://")):
        raise httpcore.UnsupportedProtocol("only http:// and https:// URLs are requested")
    parsed = httpcore.URL(url)
    target, origin = parsed.target, parsed.origin
    host = b"[%s]" % origin.host if b":" in origin.host else origin.host  # an IPv6 address
    if origin.port != {b"http": 80, b"https": 443}.get(origin.scheme):
        host += b":%d" % origin.port
    return target, origin, host


def _length(method: str, content: bytes | AsyncIterable[bytes]) -> list[tuple[bytes, bytes]]:
    if not isinstance(content, bytes) or (not content and method in ("GET", "HEAD")):
        return []  # a stream names its own length; no body, none expected: none either
    return [(b"Content-Length", str(len(content)).encode())]


def as_httpx_error(
    err: httpcore.TimeoutException | httpcore.NetworkError | httpcore.ProtocolError,
) -> Exception:
    """The httpx exception httpx's own transport would raise for an httpcore one (the
    same names: ConnectError, ReadTimeout, RemoteProtocolError...), for callers written
    against httpx's."""
    for cls in type(err).__mro__:
        twin = getattr(httpx, cls.__name__, None)
        if isinstance(twin, type) and issubclass(twin, httpx.TransportError):
            return twin(str(err))
    return httpx.TransportError(str(err))


def _key(origin: httpcore.Origin) -> Origin:
    return (origin.scheme, origin.host, origin.port)


def _close_soon(connection: Connection) -> None:
    """Close a connection nobody waits on (closing a plain socket does not block)."""
    task = asyncio.ensure_future(connection.aclose())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
