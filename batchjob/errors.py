"""Typed errors of the BatchJob client. They keep the server's code and message, never the token."""

from __future__ import annotations

from typing import Any

from batchjob import redaction

# Messages the service uses for rejected files (contract, DESIGN §6).
UNSUPPORTED_FILE_TYPE = "unsupported file type"
UNSUPPORTED_SCHEMA = "unsupported schema"
NO_VALID_DATA_ROWS = "no valid data rows"
CONTENTS_REQUIRED = "at least one contents field is required"


class BatchJobError(Exception):
    """Base class. `status` is the HTTP status (None when there was no answer)."""

    kind = "error"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or self.kind)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}

    def __str__(self) -> str:
        parts = [self.kind]
        if self.status:
            parts.append(str(self.status))
        if self.code:
            parts.append(self.code)
        return f"{' '.join(parts)}: {self.message}" if self.message else " ".join(parts)


class AuthError(BatchJobError):
    kind = "authentication failed"


class InsufficientBalance(BatchJobError):
    kind = "insufficient balance"

    @property
    def current(self) -> float | None:
        return _first_number(self.details, "current_balance", "current", "balance")

    @property
    def required(self) -> float | None:
        return _first_number(self.details, "required", "required_balance", "required_amount", "cost")

    @property
    def shortfall(self) -> float | None:
        given = _first_number(self.details, "shortfall", "missing")
        if given is not None:
            return given
        if self.current is not None and self.required is not None:
            return round(self.required - self.current, 6)
        return None


class ValidationError(BatchJobError):
    kind = "rejected"


class NotFound(BatchJobError):
    kind = "not found"


class Conflict(BatchJobError):
    kind = "conflict"


class Unavailable(BatchJobError):
    """5xx, connection failure or timeout: the service could not be reached or failed."""

    kind = "service unavailable"

    def __init__(self, message: str = "", *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(Unavailable):
    kind = "rate limited"


class OutcomeUnknown(BatchJobError):
    """A POST was sent and no answer came back: it may or may not have taken effect."""

    kind = "outcome unknown"


def _first_number(d: dict[str, Any], *keys: str) -> float | None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                continue
    return None


MESSAGE_LIMIT = 500


def error_for(status: int, body: Any, retry_after: float | None) -> BatchJobError:
    """The typed error for an HTTP error answer, with the server's code and message.

    The message is the service's text: redacted (it may echo our token) and bounded."""
    code, message, details = _parse_body(body)
    message = redaction.redact(message, MESSAGE_LIMIT)
    code = redaction.redact(code, 100) if code is not None else None
    kw: dict[str, Any] = {"status": status, "code": code, "details": details}
    if status in (401, 403):
        return AuthError(message, **kw)
    if status == 402:
        return InsufficientBalance(message, **kw)
    if status in (400, 413, 422):
        return ValidationError(message, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if status == 409:
        return Conflict(message, **kw)
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **kw)
    if status >= 500:
        return Unavailable(message, retry_after=retry_after, **kw)
    return BatchJobError(message, **kw)


def _parse_body(body: Any) -> tuple[str | None, str, dict[str, Any]]:
    """Accepts {"error": {code, message, ...}}, {code, message}, {detail}, or text."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, str):
            return None, err[:500], {k: v for k, v in body.items() if k != "error"}
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or err.get("msg") or ""
            if not isinstance(message, str):
                message = str(message)
            code = err.get("code") or err.get("type")
            details = {k: v for k, v in err.items() if k not in ("message", "code")}
            if err is not body:
                details.update({k: v for k, v in body.items() if k != "error"})
            return (str(code) if code is not None else None), message[:500], details
    if isinstance(body, str):
        return None, body.strip()[:500], {}
    return None, "", {}
