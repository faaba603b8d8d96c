"""Async client for the BatchJob service: pooled connections (`batchjob.http_pool` for the
API's calls, httpx for streamed downloads or a transport given), typed results.

Retry rules (the service bills per job, so a duplicate submit costs real money):
- GET: retried on 5xx, 429, connect errors and timeouts, with exponential backoff and
  full jitter, honouring Retry-After, at most `retries` times.
- POST: retried only when it provably never left this machine (connect failure).
  A POST that was sent and got no answer raises OutcomeUnknown.
- submit: never retried, whatever happened.
The bearer token lives only in the clients' default headers; it is in no repr, log line or
error text.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import random
import re
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

from batchjob import DEFAULT_MODE, DEFAULT_MODEL, http_errors, redaction
from batchjob.answers import NotJSON, answer_of, json_or_text, loads, read, retry_after_of
from batchjob.envelopes import envelope
from batchjob.errors import BadAnswer, BatchJobError, OutcomeUnknown, Unavailable, error_for
from batchjob.http_pool import ConnectionPool, as_httpx_error, proxied
from batchjob.models import Estimate, Job, JobPage, UploadResult

log = logging.getLogger("batchjob.client")

Retry = Literal["idempotent", "connect_only", "never"]
# Base64 works in 3-byte groups; a multiple of 3 keeps chunks independent.
UPLOAD_CHUNK = 3 * 64 * 1024


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0
    write: float = 60.0
    pool: float = 5.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def sanitize_filename(name: str, default: str = "prompts.jsonl") -> str:
    """A base name without directories, control characters or quotes; at most 120 chars."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if unicodedata.category(c)[0] != "C")
    base = re.sub(r'["<>|:*?\s]+', "_", base).strip("._")
    if not base:
        return default
    if len(base) > 120:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 119 - len(ext)] + "." + ext) if dot and len(ext) <= 10 else base[:120]
    return base


class BatchJobClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeouts: Timeouts | None = None,
        retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_connections: int = 20,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        redaction.register(token)  # a service that echoes our Authorization header
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep
        limits = timeouts or Timeouts()
        # The API's calls go through our pool (a quarter of httpx's CPU a call); the
        # streamed downloads, a transport given (tests, a custom one) and calls through a
        # proxy from the environment through httpx.
        pooled = transport is None and not proxied(self.base_url)
        self._pool = ConnectionPool(max_connections=max_connections) if pooled else None
        self._pool_timeouts: dict[str, float | None] = dataclasses.asdict(limits)
        defaults = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._headers = [(k.encode(), v.encode()) for k, v in defaults.items()]
        self._httpx_options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": defaults,
            "timeout": limits.httpx(),
            "transport": transport,
            "follow_redirects": False,
        }
        self._max_connections = max_connections
        self._httpx: httpx.AsyncClient | None = None

    @property
    def _http(self) -> httpx.AsyncClient:
        """httpx's client, made when first needed (downloads, a proxy, a given transport):
        a bot whose calls all go through the pool never loads httpcore (~0.9 MiB)."""
        if self._httpx is None:
            options = self._httpx_options
            if options["transport"] is None:
                from batchjob.http_transport import asyncio_transport

                options = {**options, "transport": asyncio_transport(max_connections=self._max_connections)}
            self._httpx = httpx.AsyncClient(**options)
        return self._httpx

    def __repr__(self) -> str:
        return f"BatchJobClient(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._httpx is not None:
            await self._httpx.aclose()
        if self._pool is not None:
            await self._pool.aclose()

    async def __aenter__(self) -> BatchJobClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- endpoints -----------------------------------------------------------------------

    async def upload(
        self, path: str | os.PathLike[str], *, filename: str | None = None, mode: str = DEFAULT_MODE
    ) -> UploadResult:
        """POST /v1/batch/files:upload with the file base64-encoded, streamed in chunks."""
        p = Path(path)
        name = sanitize_filename(filename or p.name)
        size = p.stat().st_size
        head = b'{"filename":' + orjson.dumps(name) + b',"mode":' + orjson.dumps(mode) + b',"content":"'
        tail = b'"}'
        length = len(head) + 4 * ((size + 2) // 3) + len(tail)

        async def body() -> AsyncIterator[bytes]:
            yield head
            with open(p, "rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    yield base64.b64encode(chunk)
            yield tail

        data = await self._request(
            "POST",
            "/v1/batch/files:upload",
            content=body,
            headers={"Content-Type": "application/json", "Content-Length": str(length)},
            retry="connect_only",
        )
        return read(UploadResult, data, "upload")

    async def precheck(
        self, record_count: int, model: str = DEFAULT_MODEL, mode: str = DEFAULT_MODE
    ) -> Estimate:
        data = await self._request(
            "POST",
            "/v1/batch/jobs:precheck",
            json={"record_count": record_count, "model": model, "mode": mode},
            retry="connect_only",
        )
        return read(Estimate, data, "precheck")

    async def submit(self, file_id: str, model: str = DEFAULT_MODEL, mode: str = DEFAULT_MODE) -> Job:
        """Create a job. Never retried: a lost answer raises OutcomeUnknown."""
        data = await self._request(
            "POST", "/v1/batch/jobs", json={"file_id": file_id, "model": model, "mode": mode}, retry="never"
        )
        try:
            return read(Job, data, "submit")
        except BadAnswer as e:
            # The job may exist: an answer we cannot read must not look like a refusal.
            raise OutcomeUnknown(f"answer not understood ({e.message})") from None

    async def get_job(self, job_id: str) -> Job:
        data = await self._request("GET", f"/v1/batch/jobs/{_segment(job_id)}", retry="idempotent")
        return read(Job, data, "job")

    async def list_jobs(self, page: int = 1, page_size: int = 20, status: str | None = None) -> JobPage:
        params: dict[str, Any] = {"page": page, "page_size": page_size}
        if status:
            params["status"] = status
        data = await self._request("GET", "/v1/batch/jobs", params=params, retry="idempotent")
        listing = read(JobPage, data, "job list")
        # Paging the answer does not repeat is the paging that was asked for.
        listing.page = listing.page if listing.page is not None else page
        listing.page_size = listing.page_size if listing.page_size is not None else page_size
        return listing

    async def cancel(self, job_id: str, reason: str | None = None) -> Job:
        data = await self._request(
            "POST",
            f"/v1/batch/jobs/{_segment(job_id)}:cancel",
            json={"reason": reason or ""},
            retry="connect_only",
        )
        if not isinstance(data, dict):
            data = {}
        if not any(k in data for k in ("job_id", "jobId", "id", "name", "batch_id", "batchId")):
            data = {**data, "job_id": job_id}
        return read(Job, data, "cancel")

    async def fetch_summary(self, url: str, max_bytes: int = 5 * 1024 * 1024) -> Any:
        """GET an output_summary_url. The token is sent only to the service's own origin."""
        target = urlsplit(url if "://" in url else self.base_url + url)
        if target.scheme not in ("http", "https"):
            raise BatchJobError("summary url is not http(s)")
        same_origin = (target.scheme, target.netloc) == urlsplit(self.base_url)[:2]
        headers = None if same_origin else {"Authorization": ""}
        absolute = target.geturl()
        try:
            async with self._http.stream("GET", absolute, headers=headers) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise error_for(resp.status_code, json_or_text(resp), retry_after_of(resp.headers))
                chunks, total = [], 0
                async for chunk in resp.aiter_bytes():
                    total += len(chunk)
                    if total > max_bytes:
                        raise BatchJobError("summary too large")
                    chunks.append(chunk)
        except httpx.TransportError as e:
            raise Unavailable(type(e).__name__) from None
        raw = b"".join(chunks)
        try:
            body = loads(raw)
        except NotJSON:
            return raw.decode("utf-8", "replace")
        payload, _failure = envelope(body)
        return payload if payload is not None else body

    async def download(
        self, url: str, dest: Path, max_bytes: int, *, allow_loopback: bool = False, timeout_s: float = 300.0
    ) -> Path:
        """Save a file the service names (a results file, say) to `dest`, capped. From the
        service's own origin with the token; from anywhere else without it, through
        `batchjob.fetch` (public addresses only, redirects checked again). A download cut
        short leaves no file. Raises BatchJobError (or FetchError for another origin)."""
        from batchjob.fetch import TooLarge, fetch_url, save_capped

        target = urlsplit(url if "://" in url else self.base_url + url)
        if target.scheme not in ("http", "https"):
            raise BatchJobError("download url is not http(s)")
        if (target.scheme, target.netloc) != urlsplit(self.base_url)[:2]:
            await fetch_url(
                target.geturl(), dest, max_bytes=max_bytes, timeout_s=timeout_s, allow_loopback=allow_loopback
            )
            return dest
        try:
            async with asyncio.timeout(timeout_s), self._http.stream("GET", target.geturl()) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise error_for(resp.status_code, json_or_text(resp), retry_after_of(resp.headers))
                await save_capped(resp, dest, max_bytes)
        except TooLarge:
            dest.unlink(missing_ok=True)
            raise BatchJobError("download too large") from None
        except (httpx.TransportError, TimeoutError) as e:
            dest.unlink(missing_ok=True)
            raise Unavailable(type(e).__name__) from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return dest

    async def probe(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int | None, float, Any]:
        """One request, not retried, never raising: (HTTP status or None, seconds, body —
        parsed JSON, text, or the transport error's name). For `batchjob doctor`."""
        import time

        start = time.monotonic()
        try:
            content, headers = b"", None
            if json is not None:
                content, headers = orjson.dumps(json), {"Content-Type": "application/json"}
            answer = await self._send(method, path, params=params, headers=headers, content=content)
            status, got, body = answer
        except httpx.HTTPError as e:
            return None, time.monotonic() - start, type(e).__name__
        elapsed = time.monotonic() - start
        if not body:
            return status, elapsed, ""
        return status, elapsed, json_or_text(httpx.Response(status, headers=got, content=body))

    # --- transport -----------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        content: Any = None,
    ) -> tuple[int, httpx.Headers, bytes]:
        """One request: (status, headers, body); errors as httpx's."""
        if self._pool is None:
            resp = await self._http.request(method, path, params=params, headers=headers, content=content)
            return resp.status_code, resp.headers, resp.content
        url = self.base_url + path + (f"?{httpx.QueryParams(params)}" if params else "")
        given = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        try:
            answer = await self._pool.request(
                method,
                url,
                headers=self._headers + given,
                content=content or b"",
                timeouts=self._pool_timeouts,
            )
        except http_errors.HTTPError as e:
            raise as_httpx_error(e) from None
        return answer.status, httpx.Headers(answer.headers), answer.body

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    async def _request(
        self,
        method: str,
        path: str,
        *,
        retry: Retry,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        attempts = 1 if retry == "never" else self.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            kwargs: dict[str, Any] = {"params": params, "headers": headers}
            if json is not None:
                kwargs["content"] = orjson.dumps(json)
                kwargs["headers"] = {**(headers or {}), "Content-Type": "application/json"}
            elif content is not None:
                kwargs["content"] = content()
            try:
                status, answer_headers, body = await self._send(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
                # Never reached the service: safe to try again, except a submit.
                log.info("%s %s: cannot connect (%s)", method, path, type(e).__name__)
                if last or retry == "never":
                    raise Unavailable(f"cannot connect ({type(e).__name__})") from None
                await self._sleep(self._backoff(attempt))
                continue
            except (httpx.TimeoutException, httpx.TransportError) as e:
                log.info("%s %s: no answer (%s)", method, path, type(e).__name__)
                if method != "GET":
                    raise OutcomeUnknown(f"sent, no answer ({type(e).__name__})") from None
                if last:
                    raise Unavailable(f"no answer ({type(e).__name__})") from None
                await self._sleep(self._backoff(attempt))
                continue
            try:
                return answer_of(status, body, retry_after_of(answer_headers))
            except Unavailable as e:
                err = e  # 5xx, 429: a GET may try again
            except BatchJobError as e:
                log.info("%s %s: %s", method, path, e)
                raise
            log.info("%s %s: %s", method, path, err)
            if retry == "idempotent" and not last:
                wait = err.retry_after if err.retry_after is not None else self._backoff(attempt)
                await self._sleep(wait)
                continue
            raise err
        raise AssertionError("unreachable")  # pragma: no cover


def _segment(job_id: str) -> str:
    """A job id as one path segment: nothing that could reach another endpoint."""
    if not re.fullmatch(r"[A-Za-z0-9._~-]{1,128}", job_id or ""):
        from batchjob.errors import NotFound

        raise NotFound("malformed job id", code="invalid_job_id")
    return job_id
