"""Envelopes and error answers in the styles services use (pure functions, no I/O).

`{"data": …}` with code/message/success/request_id beside it; failures said in an HTTP 200
(`success: false`, a non-zero `code`) mapped to the HTTP status they stand for; error bodies
as `{"error": {code, message}}`, `{code, message, data}`, `{error_code, message}`,
`{"detail": …}` (text or FastAPI's list), Google's `{"error": {code, status, details}}`,
plain text or an HTML page; balance figures of an "insufficient balance" answer.
"""

from __future__ import annotations

import re
from typing import Any

from batchjob.shapes import first, money, text

ENVELOPE_KEYS = frozenset(
    {
        "code",
        "message",
        "msg",
        "success",
        "ok",
        "status",
        "request_id",
        "requestId",
        "trace_id",
        "traceId",
        "meta",
        "error",
        "errors",
        "timestamp",
        "ts",
        "error_code",
        "errorCode",
        "detail",
    }
)
# fmt: on
_OK_CODES = {"0", "200", "ok", "success", "succeeded", "none"}


def envelope(body: Any) -> tuple[Any, dict[str, Any] | None]:
    """(payload, failure). A `{"data": …}` envelope (with any of code/message/success/
    request_id/trace_id beside it) is unwrapped; when it says failure (`success: false`,
    `code` not 0) the failure is returned, whatever the HTTP status said."""
    if not isinstance(body, dict):
        return body, None
    keys = set(body)
    if not (keys - {"data"}) <= ENVELOPE_KEYS:
        return body, None
    success = body.get("success", body.get("ok"))
    code = body.get("code", body.get("error_code", body.get("errorCode")))
    failed = success is False or (
        code is not None and not isinstance(code, bool) and str(code).strip().lower() not in _OK_CODES
    )
    if "data" not in body and not failed:
        return body, None
    if failed:
        return None, body
    return body.get("data"), None


_KEYWORDS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (402, ("balance", "insufficient", "points", "credit", "payment", "recharge", "quota_exceeded")),
    (401, ("auth", "token", "unauthor", "forbidden", "permission", "signature", "api_key", "apikey")),
    (429, ("rate", "too_many", "throttl", "too many")),
    (404, ("not_found", "notfound", "not found", "no such", "does not exist", "unknown_job")),
    (409, ("conflict", "already", "duplicate", "not_cancellable")),
    (503, ("unavailable", "internal", "timeout", "busy", "overload", "maintenance")),
    (400, ("invalid", "validation", "bad_request", "unsupported", "schema", "malformed", "missing")),
)


def twin_status(code: Any, message: Any) -> int | None:
    """The HTTP status an envelope's failure stands for: its numeric code (401, 40201,
    4011…), else words in its code or message."""
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code.strip())
    if isinstance(code, int) and not isinstance(code, bool):
        for div in (1, 10, 100, 1000):
            c = code // div
            if 400 <= c < 600 and code < 600 * div:
                return c
    words = f"{code if isinstance(code, str) else ''} {message if isinstance(message, str) else ''}".lower()
    for status, keys in _KEYWORDS:
        if any(k in words for k in keys):
            return status
    return None


def _plain(text_: str) -> str:
    """Text of an HTML or plain error page: tags and runs of white space removed."""
    if "<" in text_ and ">" in text_:
        text_ = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text_)
        text_ = re.sub(r"(?s)<[^>]*>", " ", text_)
    return re.sub(r"\s+", " ", text_).strip()


def error_parts(body: Any) -> tuple[str | None, str, dict[str, Any]]:
    """(code, message, details) of an error answer, whatever its style."""
    if isinstance(body, str):
        return None, _plain(body)[:500], {}
    if not isinstance(body, dict):
        return None, "", {}
    err: Any = body.get("error")
    if isinstance(err, list) and err and isinstance(err[0], dict):
        err = err[0]
    errors = body.get("errors")
    if err is None and isinstance(errors, list) and errors and isinstance(errors[0], dict):
        err = errors[0]
    if not isinstance(err, dict):
        err = body
    message: Any = None
    for key in (
        "message",
        "msg",
        "error_description",
        "errorMessage",
        "description",
        "title",
        "detail",
        "error",
    ):
        v = err.get(key) if isinstance(err, dict) else None
        if isinstance(v, str) and v.strip():
            message = v
            break
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):  # FastAPI's detail
            message = "; ".join(str(x.get("msg") or x.get("message") or "") for x in v[:5])
            break
    code: Any = None
    for key in ("code", "error_code", "errorCode", "type", "reason", "status"):
        v = err.get(key)
        if isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip():
            code = v
            break
    details: dict[str, Any] = {}
    for src in (body, err, body.get("data"), err.get("data"), err.get("details"), err.get("metadata")):
        if isinstance(src, dict):
            details.update({k: v for k, v in src.items() if k not in ("message", "error", "data")})
        elif isinstance(src, list):
            for item in src[:5]:
                if isinstance(item, dict):
                    details.update(item.get("metadata") if isinstance(item.get("metadata"), dict) else item)
    if message is None and isinstance(code, str):
        message = code
    return (str(code)[:100] if code is not None else None), str(message or "")[:500], details


def balance_figures(details: dict[str, Any]) -> dict[str, Any]:
    """current, required, shortfall (the third computed from two), currency, recharge_url."""
    current, unit = money(first(details, "balance"))
    required, unit2 = money(first(details, "required"))
    if required is None:
        required, unit2 = money(first(details, "estimated_cost"))
    shortfall, unit3 = money(first(details, "shortfall"))
    if shortfall is None and current is not None and required is not None:
        shortfall = round(required - current, 6)
    if current is None and required is not None and shortfall is not None:
        current = round(required - shortfall, 6)
    if required is None and current is not None and shortfall is not None:
        required = round(current + shortfall, 6)
    url = first(details, "recharge_url")
    return {
        "current": current,
        "required": required,
        "shortfall": shortfall,
        "currency": text(first(details, "currency")) or unit or unit2 or unit3,
        "recharge_url": url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
    }
