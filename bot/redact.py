"""Secrets out of every log line: see `batchjob.redaction`."""

from __future__ import annotations

from batchjob.redaction import install_log_redaction, register


def redact_secrets(*secrets: str | None) -> None:
    register(*secrets)
    install_log_redaction()
