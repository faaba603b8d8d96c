"""Localized sentences for report codes; the sentences themselves live in `locales/`."""

from __future__ import annotations

from typing import Any

import locales
from batchjob.input.report import Issue


def _flatten(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ", ".join(map(str, v)) if isinstance(v, list | tuple) else v for k, v in params.items()}


def issue_message(issue: Issue, lang: str) -> str:
    params = _flatten(issue.params)
    reason = params.get("reason")
    if isinstance(reason, str) and locales.has(f"input.reason.{reason}"):
        params["reason"] = locales.t(lang, f"input.reason.{reason}")
    return locales.t(lang, f"input.{issue.code}", **{"row": issue.row, "column": issue.column, **params})
