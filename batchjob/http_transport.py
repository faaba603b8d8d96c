"""An httpx transport whose connections run on asyncio's own transports, not on anyio.

httpcore reaches asyncio through anyio. Per socket operation that costs a cancel scope with
its timer, an exception-mapping context manager and a checkpoint; and before each request
the pool asks every connection whether it is readable, which anyio answers with a
`getpeername` and a `poll` system call per connection. Under load that was a fifth of the
bot's CPU. httpcore's own asyncio backend was dropped upstream (encode/httpcore#930 was
declined), and its public `AsyncNetworkBackend` interface is the place for one: this is it,
on the streams of `http_stream` (which raise httpcore's errors here). Only the socket layer
changes; HTTP/1.1 framing, the pool, timeouts and exceptions stay httpcore's and httpx's.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from batchjob.http_stream import AsyncioStream, _Protocol, connect, default_tls

__all__ = ["AsyncioBackend", "AsyncioStream", "asyncio_transport", "default_tls"]


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
        return await connect(connecting, timeout, httpcore, socket_options)  # type: ignore[return-value]

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        connecting = loop.create_unix_connection(_Protocol, path)
        return await connect(connecting, timeout, httpcore, socket_options)  # type: ignore[return-value]

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


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
