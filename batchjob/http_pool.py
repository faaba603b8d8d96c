"""A small pool of HTTP/1.1 connections for calls that need no more than a request and its
whole answer (the Telegram Bot API's calls and file downloads, the BatchJob API's calls).

httpx's client, cookie jar and connection pool cost three quarters of a request's CPU
(measured: 1.2 ms a request through httpx, 0.33 ms straight on httpcore's connection, 20 in
flight), and httpcore's connection most of the rest: the connection is `http11.Connection`
(llhttp's parsing on `AsyncioStream`), and this module keeps a bounded set of them, idle
ones per origin. Errors are `http_errors` (httpcore's names; httpcore itself is not loaded).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterable

from batchjob import http_errors as errors
from batchjob.http11 import Answer, Connection, Origin, ResponseTooLarge
from batchjob.http_stream import default_tls

__all__ = ["Answer", "ConnectionPool", "ResponseTooLarge", "as_httpx_error", "proxied"]

MAX_BODY = 64 * 1024 * 1024  # an answer longer than this is refused, not read into memory
# Idle connections are reused for less time than servers keep them (uvicorn, Node: 5 s). At
# the server's own limit, a request races the server's close and is lost as "sent, no
# answer" (seen once in 1,000 chats against the sandbox, with both at 5 s).
KEEPALIVE_S = 4.0


class ConnectionPool:
    """At most `max_connections` requests in flight (a request waits up to its pool timeout
    for one to end: `PoolTimeout`, nothing sent); connections kept alive per origin for
    `keepalive_expiry` seconds. Errors are `http_errors`."""

    def __init__(
        self,
        *,
        max_connections: int,
        keepalive_expiry: float = KEEPALIVE_S,
        tls: ssl.SSLContext | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._max = max_connections
        self._expiry = keepalive_expiry
        self._tls = tls or default_tls()
        self._tls.set_alpn_protocols(["http/1.1"])  # as httpcore did on each connection
        self._max_body = max_body
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
                raise errors.PoolTimeout("no connection came free in time") from None
        else:
            await self._slots.acquire()
        try:
            connection = self._take(origin) or await Connection.open(
                origin,
                tls=self._tls,
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

    def _take(self, origin: Origin) -> Connection | None:
        """The most recently used idle connection that is still good, if any. One the peer
        closed (or sent something unasked) has expired and is dropped."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            _close_soon(connection)
        return None

    def _give_back(self, origin: Origin, connection: Connection) -> None:
        idle = self._idle.setdefault(origin, [])
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


_DEFAULT_PORTS = {"http": 80, "https": 443}
_ASCII = "".join(map(chr, range(128)))  # left as they are by quote(): checked when sent


@functools.lru_cache(maxsize=512)
def _parsed(url: str) -> tuple[bytes, Origin, bytes]:
    """The request target, the origin and the Host header; the same few URLs (the Bot API's
    methods) come again and again, and parsing one took ~9 us. Characters beyond ASCII are
    percent-encoded as UTF-8 (a file's path in an answer may hold some); anything else that
    cannot be sent as it is (a space, a control character) is refused when the request is."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise errors.UnsupportedProtocol("only http:// and https:// URLs are requested")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
        host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise errors.LocalProtocolError("the URL's host or port is not valid") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not target.isascii():
        target = urllib.parse.quote(target, safe=_ASCII)
    header = f"[{host}]" if ":" in host else host  # an IPv6 address
    if port != _DEFAULT_PORTS[scheme]:
        header += f":{port}"
    return target.encode("ascii"), Origin(scheme, host, port), header.encode("ascii")


def _length(method: str, content: bytes | AsyncIterable[bytes]) -> list[tuple[bytes, bytes]]:
    if not isinstance(content, bytes) or (not content and method in ("GET", "HEAD")):
        return []  # a stream names its own length; no body, none expected: none either
    return [(b"Content-Length", str(len(content)).encode())]


def as_httpx_error(err: errors.HTTPError) -> Exception:
    """The httpx exception httpx's own transport would raise for this one (the same names:
    ConnectError, ReadTimeout, RemoteProtocolError...), for callers written against httpx's."""
    import httpx  # loaded by then: the callers' own module uses it

    for cls in type(err).__mro__:
        twin = getattr(httpx, cls.__name__, None)
        if isinstance(twin, type) and issubclass(twin, httpx.TransportError):
            return twin(str(err))
    return httpx.TransportError(str(err))


def _close_soon(connection: Connection) -> None:
    """Close a connection nobody waits on (closing a plain socket does not block)."""
    task = asyncio.ensure_future(connection.aclose())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
