"""Localized sentences for report codes; the sentences themselves live in `locales/`."""

from __future__ import annotations

import locales
from batchjob.input.report import Issue


def issue_message(issue: Issue, lang: str) -> str:
    params = dict(issue.params)  # lists are joined by locales.t, with the language's separator
    reason = params.get("reason")
    if isinstance(reason, str) and locales.has(f"input.reason.{reason}"):
        params["reason"] = locales.t(lang, f"input.reason.{reason}")
    return locales.t(lang, f"input.{issue.code}", **{"row": issue.row, "column": issue.column, **params})
