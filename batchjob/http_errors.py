"""The errors of the pooled HTTP calls, named as httpcore names its own.

The pool (`http_pool`, `http11`) raises these rather than httpcore's, so that a bot that
makes only pooled calls never imports httpcore, h11 and anyio (~0.9 MiB of an idle bot's
memory). The names and the hierarchy are httpcore's: `http_pool.as_httpx_error` maps them
to httpx's by name, as it did httpcore's.
"""

from __future__ import annotations


class HTTPError(Exception):
    """Any failure of a pooled request."""


class TimeoutException(HTTPError):
    pass


class PoolTimeout(TimeoutException):
    """No connection came free in time: nothing was sent."""


class ConnectTimeout(TimeoutException):
    pass


class ReadTimeout(TimeoutException):
    pass


class WriteTimeout(TimeoutException):
    pass


class NetworkError(HTTPError):
    pass


class ConnectError(NetworkError):
    pass


class ReadError(NetworkError):
    pass


class WriteError(NetworkError):
    pass


class ProtocolError(HTTPError):
    pass


class RemoteProtocolError(ProtocolError):
    """The server's answer broke HTTP/1.1."""


class LocalProtocolError(ProtocolError):
    """The request would have broken HTTP/1.1: refused before anything was sent."""


class UnsupportedProtocol(HTTPError):
    """Not an http:// or https:// URL."""
