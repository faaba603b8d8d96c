"""Reading user files: detect, bound, validate every row, normalize to canonical JSONL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchjob.input.limits import InputError, Limits
from batchjob.input.report import Column, Issue, Report

if TYPE_CHECKING:
    from batchjob.input.pipeline import convert_file, inspect_file

__all__ = ["Column", "InputError", "Issue", "Limits", "Report", "convert_file", "inspect_file"]


def __getattr__(name: str) -> Any:
    # The readers are imported on first use: a bot hands files to its parsing worker and
    # never reads one in its own process, so it does not keep their code in memory.
    if name in ("convert_file", "inspect_file"):
        from batchjob.input import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
