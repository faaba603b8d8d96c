"""Typed errors of the BatchJob client. They keep the server's code and message, never the token."""

from __future__ import annotations

from typing import Any

from batchjob import redaction

# Messages the service uses for rejected files (contract, DESIGN §6).
UNSUPPORTED_FILE_TYPE = "unsupported file type"
UNSUPPORTED_SCHEMA = "unsupported schema"
NO_VALID_DATA_ROWS = "no valid data rows"
CONTENTS_REQUIRED = "at least one contents field is required"


class ConfigError(Exception):
    """One line naming the variable that is missing or malformed."""


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
    """Current, required and shortfall (the third computed when two are given), in the
    service's unit, and where to top up, whatever spelling the service used."""

    kind = "insufficient balance"

    @property
    def figures(self) -> dict[str, Any]:
        from batchjob.envelopes import balance_figures

        return balance_figures(self.details)

    @property
    def current(self) -> float | None:
        return self.figures["current"]  # type: ignore[no-any-return]

    @property
    def required(self) -> float | None:
        return self.figures["required"]  # type: ignore[no-any-return]

    @property
    def shortfall(self) -> float | None:
        return self.figures["shortfall"]  # type: ignore[no-any-return]

    @property
    def currency(self) -> str | None:
        return self.figures["currency"]  # type: ignore[no-any-return]

    @property
    def recharge_url(self) -> str | None:
        return self.figures["recharge_url"]  # type: ignore[no-any-return]


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


class BadAnswer(BatchJobError):
    """The service answered, but not in any shape this client can read (a job without an id,
    an upload without a file id, a list answer without a list). `excerpt` is the start of
    the answer, redacted."""

    kind = "unexpected answer"

    def __init__(self, message: str = "", *, excerpt: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.excerpt = excerpt


class OutcomeUnknown(BatchJobError):
    """A POST was sent and no answer came back: it may or may not have taken effect."""

    kind = "outcome unknown"


MESSAGE_LIMIT = 500


def error_for(status: int, body: Any, retry_after: float | None) -> BatchJobError:
    """The typed error for an error answer, with the server's code and message. `status` is
    the HTTP status, or for a failure said in an HTTP 200 envelope the status it stands for.

    The message is the service's text: redacted (it may echo our token) and bounded."""
    from batchjob.envelopes import error_parts

    code, message, details = error_parts(body)
    message = redaction.redact(message, MESSAGE_LIMIT)
    code = redaction.redact(code, 100) if code is not None else None
    kw: dict[str, Any] = {"status": status, "code": code, "details": details}
    words = f"{code or ''} {message}".lower()
    if status == 402 or (status in (400, 403, 409, 422) and _is_balance(words)):
        return InsufficientBalance(message, **kw)
    if status in (401, 403):
        return AuthError(message, **kw)
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


def _is_balance(words: str) -> bool:
    return any(k in words for k in ("insufficient_balance", "points_insufficient", "insufficient balance"))
