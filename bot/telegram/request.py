"""PTB's requests on `batchjob.http_pool` rather than httpx's client (a Bot API call took
1.2 ms of CPU through httpx, 0.3 ms here), behaving as PTB's `HTTPXRequest` does: the same
multipart bodies, timeouts and errors (`TimedOut`, `NetworkError`). A call without files
goes as a JSON body (the Bot API takes either), not a form: percent-encoding a message's
text took ~60 us for a thousand bytes, encoding it as JSON ~1.

Behind a proxy from the environment (HTTPS_PROXY, ALL_PROXY...) the bot keeps PTB's own
request, which honours it: `telegram_request` chooses.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

from batchjob import http_errors
from batchjob.http_pool import ConnectionPool, proxied

_DEFAULT = type(BaseRequest.DEFAULT_NONE)  # a timeout the call left to the request's own


class NotSent(Exception):
    """The cause of a `TimedOut` whose request never left (no connection came free, or
    none could be made): sending again cannot deliver it twice."""


class PooledRequest(BaseRequest):
    def __init__(
        self,
        *,
        connections: int,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._connections = connections
        self._pool: ConnectionPool | None = None
        self._timeouts = {
            "read": read_timeout,
            "write": write_timeout,
            "connect": connect_timeout,
            "pool": pool_timeout,
        }
        self._media_write_timeout = media_write_timeout

    @property
    def read_timeout(self) -> float | None:
        return self._timeouts["read"]

    async def initialize(self) -> None:
        if self._pool is None:
            self._pool = ConnectionPool(max_connections=self._connections)

    async def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._pool is None:
            raise RuntimeError("This PooledRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        if files:
            body, content_type = multipart(request_data.json_parameters if request_data else {}, files)
        elif request_data:
            body = orjson.dumps(request_data.parameters)
            content_type = "application/json"
        else:
            body, content_type = b"", ""
        given = {
            "read": read_timeout,
            "write": write_timeout,
            "connect": connect_timeout,
            "pool": pool_timeout,
        }
        timeouts = {k: self._timeouts[k] if isinstance(v, _DEFAULT) else v for k, v in given.items()}
        if files and isinstance(write_timeout, _DEFAULT):
            timeouts["write"] = self._media_write_timeout
        headers = [(b"User-Agent", self.USER_AGENT.encode())]
        if content_type:
            headers.append((b"Content-Type", content_type.encode()))
        try:
            answer = await self._pool.request(method, url, headers=headers, content=body, timeouts=timeouts)
        except (http_errors.PoolTimeout, http_errors.ConnectTimeout) as err:
            raise TimedOut(f"{type(err).__name__}: the request was not sent") from NotSent(str(err))
        except http_errors.ConnectError as err:
            raise NetworkError(f"{type(err).__name__}: the request was not sent") from NotSent(str(err))
        except http_errors.TimeoutException as err:
            raise TimedOut from err
        except (http_errors.NetworkError, http_errors.ProtocolError, http_errors.UnsupportedProtocol) as err:
            # The class and its message only: an error of the URL would hold the bot's token.
            raise NetworkError(f"{type(err).__name__}: {err}") from err
        return answer.status, answer.body

    @staticmethod
    def parse_json_payload(payload: bytes) -> Any:
        """As PTB's (a payload that is not UTF-8 JSON is read as PTB reads it), with orjson."""
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return BaseRequest.parse_json_payload(payload)


def multipart(fields: dict[str, str], files: dict[str, Any]) -> tuple[bytes, str]:
    """A multipart/form-data body as httpx makes it: the fields, then the files
    (name -> (filename, content, mime type); content as bytes or an open file)."""
    boundary = secrets.token_hex(16)
    dash = f"--{boundary}\r\n".encode()
    parts: list[bytes] = []
    for name, value in fields.items():
        parts += [dash, _disposition(name), b"\r\n\r\n", value.encode(), b"\r\n"]
    for name, (filename, content, mime) in files.items():
        data = content if isinstance(content, bytes) else content.read()
        parts += [dash, _disposition(name, filename), f"\r\nContent-Type: {mime}\r\n\r\n".encode()]
        parts += [data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _quoted(value: str) -> str:
    # As HTML5 forms (and httpx) escape a name: quotes and line breaks percent-encoded.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _disposition(name: str, filename: str | None = None) -> bytes:
    text = f'Content-Disposition: form-data; name="{_quoted(name)}"'
    if filename is not None:
        text += f'; filename="{_quoted(filename)}"'
    return text.encode()


def telegram_request(base_url: str, *, connections: int, **timeouts: Any) -> BaseRequest:
    """Our pooled request; PTB's own when a proxy from the environment applies to Telegram."""
    if proxied(base_url):
        return HTTPXRequest(connection_pool_size=connections, **timeouts)
    return PooledRequest(connections=connections, **timeouts)
