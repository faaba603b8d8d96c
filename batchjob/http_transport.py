"""An httpx transport whose connections run on asyncio's own transports, not on anyio.

httpcore reaches asyncio through anyio. Per socket operation that costs a cancel scope with
its timer, an exception-mapping context manager and a checkpoint; and before each request
the pool asks every connection whether it is readable, which anyio answers with a
`getpeername` and a `poll` system call per connection. Under load that was a fifth of the
bot's CPU. httpcore's own asyncio backend was dropped upstream (encode/httpcore#930 was
declined), and its public `AsyncNetworkBackend` interface is the place for one: this is it,
about the size of the one removed. Only the socket layer changes; HTTP/1.1 framing, the
pool, timeouts and exceptions stay httpcore's and httpx's.

A connection's protocol keeps reading while it is idle (at most `HIGH_WATER` bytes before
it pauses), so whether the peer closed it or sent something unasked is known from state.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

HIGH_WATER = 256 * 1024  # bytes buffered before the socket is no longer read
LOW_WATER = 64 * 1024
COALESCE = 64 * 1024  # writes smaller than this together wait to leave in one send


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self.reading_paused = False
        self.waiter: asyncio.Future[None] | None = None  # a read waiting for data
        self.drained: asyncio.Future[None] | None = None  # a write waiting for room
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close our side too: HTTP/1.1 has no use for a half-open connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _within(fut: asyncio.Future[Any], timeout: float | None, raising: type[Exception]) -> None:
    """Wait for `fut`, raising `raising` after `timeout` seconds (None: no limit)."""
    if timeout is None:
        await fut
        return
    loop = asyncio.get_running_loop()
    timer = loop.call_later(timeout, lambda: fut.done() or fut.cancel())
    try:
        await fut
    except asyncio.CancelledError:
        if fut.cancelled() and not _cancelling():
            raise raising() from None  # our timer, not a cancellation of the task
        raise
    finally:
        timer.cancel()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        # Small writes wait here for the next write or read: a request's head and body leave
        # in one send, not two (each send on a socket is a system call).
        self._pending: list[bytes] = []
        self._pending_size = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._flush()
        p = self._protocol
        while not p.buffer:
            if p.eof:
                if p.error is not None:
                    raise httpcore.ReadError(str(p.error))
                return b""
            p.waiter = asyncio.get_running_loop().create_future()
            try:
                await _within(p.waiter, timeout, httpcore.ReadTimeout)
            finally:
                p.waiter = None
        data = bytes(p.buffer[:max_bytes])
        del p.buffer[:max_bytes]
        if p.reading_paused and len(p.buffer) < LOW_WATER and not self._transport.is_closing():
            p.reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        p = self._protocol
        if self._transport.is_closing() or p.error is not None:
            raise httpcore.WriteError("connection closed")
        self._pending.append(buffer)
        self._pending_size += len(buffer)
        if self._pending_size < COALESCE:
            return  # sent with what follows (at the latest when the answer is read)
        self._flush()
        if p.writing_paused:  # the kernel's buffer is full: wait for room, within the timeout
            p.drained = asyncio.get_running_loop().create_future()
            try:
                await _within(p.drained, timeout, httpcore.WriteTimeout)
            finally:
                p.drained = None
            if p.error is not None:
                raise httpcore.WriteError(str(p.error))

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            if not self._transport.is_closing():
                self._transport.write(data)

    async def aclose(self) -> None:
        self._pending, self._pending_size = [], 0
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        p = self._protocol
        try:
            tls = await loop.start_tls(
                self._transport,
                p,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except TimeoutError as e:
            self._transport.close()
            raise httpcore.ConnectTimeout(str(e)) from e
        except (OSError, ssl.SSLError, ConnectionError) as e:
            self._transport.close()
            raise httpcore.ConnectError(str(e)) from e
        if tls is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        p.transport = tls  # type: ignore[assignment]
        return AsyncioStream(tls, p)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # idle, yet the peer closed it or sent something unasked
            return bool(self._protocol.buffer) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        connecting = loop.create_connection(_Protocol, host, port, local_addr=local)
        return await self._connect(connecting, timeout, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        return await self._connect(loop.create_unix_connection(_Protocol, path), timeout, socket_options)

    async def _connect(
        self, connecting: Any, timeout: float | None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None
    ) -> AsyncioStream:
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await connecting
        except TimeoutError as e:
            raise httpcore.ConnectTimeout("connecting timed out") from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
        sock: socket.socket | None = transport.get_extra_info("socket")
        for option in socket_options or ():
            if sock is not None:
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS settings (certifi's CAs; SSL_CERT_FILE/DIR honoured), made once: each
    context holds its own copy of the CA list, and every client here verifies the same way."""
    return httpx.create_ssl_context()


def asyncio_transport(
    *,
    max_connections: int,
    max_keepalive_connections: int | None = None,
    keepalive_expiry: float = 5.0,
    retries: int = 0,
    verify: ssl.SSLContext | None = None,
) -> httpx.AsyncHTTPTransport:
    """An httpx transport like the default one (HTTP/1.1; TLS verified with httpx's defaults
    unless `verify` is given), on `AsyncioBackend`."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive_connections,
        keepalive_expiry=keepalive_expiry,
    )
    tls = verify or default_tls()
    transport = httpx.AsyncHTTPTransport(verify=tls, limits=limits, retries=retries)
    # The transport's own pool, rebuilt the same way with our backend: httpx takes no
    # backend, and its request and exception mapping around the pool is what we keep.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        retries=retries,
        network_backend=AsyncioBackend(),
    )
    return transport
