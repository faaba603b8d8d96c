"""Reading user files: detect, bound, validate every row, normalize to canonical JSONL."""

from batchjob.input.limits import InputError, Limits
from batchjob.input.pipeline import convert_file, inspect_file
from batchjob.input.report import Column, Issue, Report

__all__ = ["Column", "InputError", "Issue", "Limits", "Report", "convert_file", "inspect_file"]
