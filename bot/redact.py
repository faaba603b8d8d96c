"""Keep secrets out of every log line, whoever logs it.

Libraries log URLs that carry the bot token (the Bot API puts it in the path: httpx logs
each request line, python-telegram-bot logs its base URL). A log record factory replaces
every registered secret in each record's final message, before any handler sees it.
"""

from __future__ import annotations

import logging

_SECRETS: set[str] = set()
_installed = False


def redact_secrets(*secrets: str | None) -> None:
    global _installed
    _SECRETS.update(s for s in secrets if s and len(s) >= 6)
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        if _SECRETS:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record stays as it is
                return record
            if any(s in message for s in _SECRETS):
                for s in _SECRETS:
                    message = message.replace(s, "***")
                record.msg, record.args = message, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
