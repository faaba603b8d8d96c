"""What the sandbox makes of an uploaded file: the service's own checks (its extension,
a JSONL file's first line), then its records read as the bot reads them, or the refusal
the service would answer with (status, code, message)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import NamedTuple

import orjson

from batchjob import sandbox_results as results
from batchjob.errors import CONTENTS_REQUIRED, NO_VALID_DATA_ROWS, UNSUPPORTED_FILE_TYPE, UNSUPPORTED_SCHEMA
from batchjob.input import Limits, pipeline
from batchjob.input.isolation import convert_file
from batchjob.input.validate import prompt_of

ACCEPTED_EXTENSIONS = (".jsonl", ".csv", ".tsv", ".txt", ".xlsx", ".xls", ".ods")
_SCHEMA_CODES = {"no_prompt_column", "unknown_line_schema"}
_TYPE_CODES = {
    "unsupported_file_type",
    "encoding_unknown",
    "spreadsheet_unreadable",
    "csv_malformed",
    "file_empty",
}


class Refusal(NamedTuple):
    """The service's error answer to an upload."""

    status: int
    code: str
    message: str


Records = tuple[list[str], list[int], list[str]]  # prompts (cut), indexes that will fail, ratios


def first_line_refusal(first: bytes) -> Refusal | None:
    """The service's own check of a JSONL file's first line."""
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        return Refusal(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
    if not isinstance(obj, dict):
        return Refusal(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
    if "contents" in obj:
        return None
    if any(k in obj for k in ("method", "url", "body")):
        return Refusal(400, "unsupported_schema", CONTENTS_REQUIRED)
    if "prompt" in obj:
        return None
    return Refusal(400, "unsupported_schema", UNSUPPORTED_SCHEMA)


def read_upload(raw: bytes, ext: str, workdir: Path, in_process: bool, fail_marker: str) -> Records | Refusal:
    """The records of an upload, or the refusal (blocking: run it in a thread)."""
    src = workdir / (secrets.token_hex(8) + ext)
    out = workdir / (secrets.token_hex(8) + ".jsonl")
    src.write_bytes(raw)
    try:
        read = pipeline.convert_file if in_process else convert_file
        report = read(src, out, skip_invalid=True, limits=Limits())
        if report.fatal is not None:
            code = report.fatal.code
            if code == "openai_batch_format":
                return Refusal(400, "unsupported_schema", CONTENTS_REQUIRED)
            if code in _SCHEMA_CODES:
                return Refusal(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
            if code in _TYPE_CODES:
                return Refusal(400, "unsupported_file_type", UNSUPPORTED_FILE_TYPE)
            if code.startswith("limit_"):
                limit = code.removeprefix("limit_")
                return Refusal(413, "file_too_large", f"file exceeds a limit ({limit})")
            return Refusal(400, "no_valid_data_rows", NO_VALID_DATA_ROWS)
        if report.valid == 0:
            if (
                report.kind is None
                and report.errors
                and all(e.code == "unknown_line_schema" for e in report.errors)
            ):
                return Refusal(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
            return Refusal(400, "no_valid_data_rows", NO_VALID_DATA_ROWS)
        prompts: list[str] = []
        fail_at: list[int] = []
        ratios: list[str] = []
        with open(out, "rb") as f:
            for i, line in enumerate(f):
                parsed = orjson.loads(line)
                text = prompt_of(parsed)
                prompts.append(text[:200])
                ratios.append(results.ratio_of(parsed))
                if fail_marker and fail_marker in text:
                    fail_at.append(i)
        return prompts, fail_at, ratios
    finally:
        src.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
