"""Reading the BatchJob service's answers: the payload or the error an answer stands for,
typed results that fail as BadAnswer (never a validation error), Retry-After."""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from batchjob import redaction
from batchjob.envelopes import envelope, twin_status
from batchjob.errors import BadAnswer, error_for

M = TypeVar("M", bound=BaseModel)
MAX_RETRY_AFTER = 120.0


def retry_after_of(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


def excerpt(body: Any) -> str:
    try:
        raw = body if isinstance(body, str) else orjson.dumps(body, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        raw = repr(body)
    return redaction.redact(raw, 300)


def read(model: type[M], body: Any, what: str) -> M:
    """The typed result of an answer, or BadAnswer: never a pydantic error."""
    try:
        return model.model_validate(body)
    except (PydanticValidationError, ValueError, TypeError, RecursionError) as e:
        reason = e.errors()[0]["msg"] if isinstance(e, PydanticValidationError) and e.errors() else str(e)
        raise BadAnswer(f"{what}: {redaction.redact(reason, 200)}", excerpt=excerpt(body)) from None


def answer_of(status: int, content: bytes, retry_after: float | None = None) -> Any:
    """The payload of an answer, or the BatchJobError it stands for: an HTTP error, an HTTP
    200 whose envelope says failure (mapped to its HTTP twin), or an answer that is not JSON."""
    if status < 400:
        if not content:
            return {}
        try:
            body = loads(content)
        except NotJSON:
            start = excerpt(content[:300].decode("utf-8", "replace"))
            raise BadAnswer("answer is not JSON", status=status, excerpt=start) from None
        payload, failure = envelope(body)
        if failure is None:
            return payload
        code, message = failure.get("code", failure.get("error_code")), failure.get("message")
        raise error_for(twin_status(code, message) or status, failure, retry_after)
    try:
        body = loads(content)
    except NotJSON:
        body = content[:500].decode("utf-8", "replace")
    raise error_for(status, body, retry_after)


class NotJSON(Exception):
    pass


def loads(raw: bytes) -> Any:
    """JSON from bytes: orjson, or the standard library for what orjson refuses (integers
    past 64 bits); nesting too deep for either is not JSON to us."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise NotJSON() from None


def json_or_text(resp: httpx.Response) -> Any:
    try:
        return loads(resp.content)
    except NotJSON:
        return resp.text[:500]
