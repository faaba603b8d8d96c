"""Keep configured secrets out of logs, tracebacks, error lines and anything shown to users.

Secrets (the service's bearer token, the bot's token, passwords in URLs) are registered
once at start. `redact` replaces each with `***`; `install_log_redaction` does that to
every log record, its traceback included, before any handler sees it (libraries log URLs
that carry the bot token in their path). Text from the outside (a service's error
message, which may echo our Authorization header) goes through `redact` and a length
bound before it is shown to anyone.
"""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import urlsplit, urlunsplit

_SECRETS: set[str] = set()
_installed = False
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MIN_SECRET = 6  # shorter strings would blank out ordinary words


def register(*secrets: str | None) -> None:
    _SECRETS.update(s for s in secrets if s and len(s) >= MIN_SECRET)


def redact(text: str, limit: int | None = None) -> str:
    """`text` without any registered secret; control characters dropped; at most `limit`."""
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, "***")
    text = _CONTROL.sub(" ", text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text


def url_without_credentials(url: str) -> str:
    """A URL to show in an error line: user and password left out."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "(unparseable URL)"


def install_log_redaction() -> None:
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        if not _SECRETS:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a malformed record stays as it is
            return record
        if any(s in message for s in _SECRETS):
            record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters print exc_text when it is set: the traceback, redacted, goes instead.
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
