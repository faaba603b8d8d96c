"""Connections on asyncio's own transports: reads and writes with timeouts, TLS.

The pooled calls (`http11`) use these streams directly; `http_transport` hands them to
httpcore for the calls that go through httpx. A stream raises the errors of the module it
is given (`http_errors` by default, httpcore's under httpx): the same names either way.

A connection's protocol keeps reading while it is idle (at most `HIGH_WATER` bytes before
it pauses), so whether the peer closed it or sent something unasked is known from state.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from batchjob import http_errors

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


class AsyncioStream:
    def __init__(
        self, transport: asyncio.Transport, protocol: _Protocol, errors: ModuleType = http_errors
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._errors = errors  # http_errors, or httpcore under httpx: the same names
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
                    raise self._errors.ReadError(str(p.error))
                return b""
            p.waiter = asyncio.get_running_loop().create_future()
            try:
                await _within(p.waiter, timeout, self._errors.ReadTimeout)
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
            raise self._errors.WriteError("connection closed")
        self._pending.append(buffer)
        self._pending_size += len(buffer)
        if self._pending_size < COALESCE:
            return  # sent with what follows (at the latest when the answer is read)
        self._flush()
        if p.writing_paused:  # the kernel's buffer is full: wait for room, within the timeout
            p.drained = asyncio.get_running_loop().create_future()
            try:
                await _within(p.drained, timeout, self._errors.WriteTimeout)
            finally:
                p.drained = None
            if p.error is not None:
                raise self._errors.WriteError(str(p.error))

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
    ) -> AsyncioStream:
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
            raise self._errors.ConnectTimeout(str(e)) from e
        except (OSError, ssl.SSLError, ConnectionError) as e:
            self._transport.close()
            raise self._errors.ConnectError(str(e)) from e
        if tls is None:
            raise self._errors.ConnectError("the connection closed during the TLS handshake")
        p.transport = tls  # type: ignore[assignment]
        return AsyncioStream(tls, p, self._errors)  # type: ignore[arg-type]

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


async def connect(
    connecting: Any,
    timeout: float | None,
    errors: ModuleType = http_errors,
    socket_options: Iterable[tuple[Any, ...]] | None = None,
) -> AsyncioStream:
    """The stream of `connecting` (a loop.create_connection(_Protocol, ...) not yet awaited)."""
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await connecting
    except TimeoutError as e:
        raise errors.ConnectTimeout("connecting timed out") from e
    except OSError as e:
        raise errors.ConnectError(str(e)) from e
    sock: socket.socket | None = transport.get_extra_info("socket")
    for option in socket_options or ():
        if sock is not None:
            sock.setsockopt(*option)
    return AsyncioStream(transport, protocol, errors)


async def connect_tcp(host: str, port: int, timeout: float | None) -> AsyncioStream:
    connecting = asyncio.get_running_loop().create_connection(_Protocol, host, port)
    return await connect(connecting, timeout)


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default TLS settings (certifi's CAs; SSL_CERT_FILE/DIR honoured), made once: each
    context holds its own copy of the CA list, and every client here verifies the same way."""
    import httpx

    return httpx.create_ssl_context()
