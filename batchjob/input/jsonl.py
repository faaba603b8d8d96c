"""JSONL input: simple lines, Vertex lines (also wrapped as {"request": ...}), and OpenAI
batch lines, which are refused with guidance. Used by the pipeline for `.jsonl` files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batchjob.input.columns import field_for
from batchjob.input.limits import InputError, Limits
from batchjob.input.report import Issue, Report
from batchjob.input.validate import cell_text, has_sd_weights, simple_line, vertex_line

if TYPE_CHECKING:  # the pipeline imports this module; no cycle at run time
    from batchjob.input.pipeline import _Clock as Clock

Emit = Callable[[bytes], None]  # one canonical line (or several), serialized, newline-terminated
CLOCK_EVERY = 2048  # rows or lines between two looks at the parse clock


def read_jsonl(path: Path, enc: str, report: Report, limits: Limits, clock: Clock, emit: Emit | None) -> None:
    """Every line of a JSONL file checked; canonical lines to `emit`."""
    binary = enc in ("utf-8", "utf-8-sig")
    kinds: dict[str, int] = {}
    ignored_keys: set[str] = set()
    errors = report.errors
    data = 0
    with open(path, "rb") if binary else open(path, encoding=enc, newline="") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno % CLOCK_EVERY == 0:
                clock.check()
            if len(raw) > limits.max_line_bytes:
                raise InputError("limit_line_length", row=lineno, limit=limits.max_line_bytes)
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf" if binary else "\ufeff")
            report.total += 1
            if not raw.strip():
                report.skipped += 1
                continue
            data += 1
            if data > limits.max_rows:
                raise InputError("limit_rows", limit=limits.max_rows)
            line, kind = _json_line(lineno, raw, errors, report, ignored_keys, binary)
            if kind:
                kinds[kind] = kinds.get(kind, 0) + 1
            if line is None:
                report.invalid += 1
                continue
            report.valid += 1
            report.sent(lineno)
            if emit is not None:
                emit(line)
    if kinds:
        report.kind = next(iter(kinds)) if len(kinds) == 1 else "mixed"
    if kinds and set(kinds) == {"openai_batch"}:
        report.fatal = Issue("openai_batch_format")


def _json_line(
    lineno: int, raw: bytes | str, errors: list[Issue], report: Report, ignored_keys: set[str], binary: bool
) -> tuple[bytes | None, str | None]:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if binary and isinstance(raw, bytes):
            raw.decode("utf-8")  # not UTF-8 at all: UnicodeDecodeError restarts with the next encoding
        errors.append(Issue("json_invalid", lineno, None, {"detail": str(e)[:120]}))
        return None, None
    if not isinstance(obj, dict):
        errors.append(Issue("json_not_object", lineno))
        return None, None
    inner = obj.get("request")
    if isinstance(inner, dict) and "contents" not in obj and "prompt" not in obj:
        obj = inner  # {"request": …} and {"key": …, "request": …}, unwrapped once
    if all(k in obj for k in ("method", "url", "body")):
        errors.append(Issue("openai_batch_line", lineno))
        return None, "openai_batch"
    if "contents" in obj:
        vertex = vertex_line(lineno, obj, errors)
        return (None if vertex is None else orjson.dumps(vertex, option=orjson.OPT_APPEND_NEWLINE)), "vertex"
    mapped: dict[str, Any] = {}
    for key, value in obj.items():
        field = field_for(str(key))
        if field in ("prompt", "aspect_ratio", "image_urls") and field not in mapped:
            mapped[field] = value
        elif key not in ignored_keys and len(ignored_keys) < 100:
            ignored_keys.add(key)
            report.warn("field_ignored", lineno, str(key)[:100])
    if "prompt" not in mapped:
        errors.append(
            Issue(
                "unknown_line_schema", lineno, None, {"keys": [str(k)[:40] for k in list(obj)[:10]] or ["-"]}
            )
        )
        return None, None
    prompt = mapped["prompt"]
    prompt = prompt if isinstance(prompt, str) else ("" if prompt is None else cell_text(prompt))
    ratio = mapped.get("aspect_ratio")
    urls = mapped.get("image_urls")
    line = simple_line(
        lineno,
        prompt,
        "" if ratio is None else str(ratio),
        urls if isinstance(urls, list) else (None if urls is None else str(urls)),
        errors,
    )
    if line is not None and has_sd_weights(prompt):
        report.warn("sd_weight_syntax", lineno, "prompt")
    return line, "simple"
