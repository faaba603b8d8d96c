"""Starter files: a header and a few example rows (one with image URLs, one Chinese)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import orjson

import locales
from batchjob.input.limits import Limits

KINDS = ("csv", "jsonl", "xlsx", "guide")
EXAMPLE_IMAGE = "https://storage.googleapis.com/generativeai-downloads/images/scones.jpg"
_RATIOS = ("1:1", "", "16:9", "3:4")
_URLS = ("", EXAMPLE_IMAGE, "", "")


def example_rows(lang: str) -> list[tuple[str, str, str]]:
    return [(locales.t(lang, f"template.example.{i + 1}"), _RATIOS[i], _URLS[i]) for i in range(4)]


def header(lang: str) -> tuple[str, str, str]:
    return tuple(
        locales.t(lang, f"template.header.{f}")  # type: ignore[return-value]
        for f in ("prompt", "aspect_ratio", "image_urls")
    )


def render(kind: str, lang: str, limits: Limits | None = None) -> bytes:
    if kind == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        w.writerow(header(lang))
        w.writerows(example_rows(lang))
        # BOM so that Excel opens the Chinese text correctly.
        return "\ufeff".encode() + buf.getvalue().encode("utf-8")
    if kind == "jsonl":
        out = bytearray()
        for prompt, ratio, url in example_rows(lang):
            line: dict[str, object] = {"prompt": prompt}
            if ratio:
                line["aspect_ratio"] = ratio
            if url:
                line["image_urls"] = [url]
            out += orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        return bytes(out)
    if kind == "xlsx":
        return _xlsx(lang)
    if kind == "guide":
        from batchjob.input.validate import ALLOWED_RATIOS  # the row checks: not for a bot's idle memory

        lim = limits or Limits()
        return locales.document(
            lang,
            "guide.md",
            max_rows=lim.max_rows,
            max_cell_chars=lim.max_cell_chars,
            max_file_mib=lim.max_file_bytes // (1024 * 1024),
            ratios=", ".join(ALLOWED_RATIOS),
            example_image=EXAMPLE_IMAGE,
        ).encode("utf-8")
    raise ValueError(f"unknown template kind {kind!r}")


def _xlsx(lang: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell.cell import TYPE_STRING

    wb = Workbook()
    ws = wb.active
    ws.title = "prompts"
    rows = [header(lang), *example_rows(lang)]
    for r, values in enumerate(rows, 1):
        for c, value in enumerate(values, 1):
            cell = ws.cell(row=r, column=c)
            # Typed as text: a leading "=" stays text (no formula), "16:9" stays a ratio.
            cell.value = value
            cell.data_type = TYPE_STRING
            cell.number_format = "@"
    # Text format for the rows a user will type into next, so Excel keeps 16:9 as typed.
    for r in range(len(rows) + 1, 501):
        for c in range(1, 4):
            ws.cell(row=r, column=c).number_format = "@"
    ws.column_dimensions["A"].width = 70
    ws.column_dimensions["B"].width = 14
    ws.column_dimensions["C"].width = 60
    ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def write(kind: str, lang: str, out: str | os.PathLike[str]) -> Path:
    data = render(kind, lang)
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
