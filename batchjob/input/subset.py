"""Some rows of a prompt file, as a new file: "run the failed rows again".

Runs in the parse worker's child, like every reading of an untrusted file. The rows are
named by the numbers the pipeline gave them (the user's row numbers: a spreadsheet's rows,
a CSV's records, a JSONL file's lines). A table keeps its header and columns, with the
original row number added as a last column `original_row`, and is written as CSV (UTF-8);
a JSONL file keeps the chosen lines as they are. Reading follows the pipeline exactly (same
sheet, same encoding, same numbering), so the numbers mean the same rows.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from batchjob.input import pipeline, rowscan
from batchjob.input.detect import sniff
from batchjob.input.limits import InputError, Limits
from batchjob.input.report import Issue, Report

ORIGINAL_ROW = "original_row"


def subset_file(
    path: str | os.PathLike[str], out: str | os.PathLike[str], rows: set[int], limits: Limits
) -> Report:
    """Write rows `rows` of `path` to `out`; the report counts them in `valid`."""
    report = Report(path=str(path))
    target = Path(out)
    tmp = target.with_name(f".{target.name}.part")
    try:
        sniffed = sniff(Path(path), limits)
        report.format, report.encoding = sniffed.format, sniffed.encoding
        if sniffed.format == "jsonl":
            written = _lines(Path(path), tmp, rows)
        elif sniffed.format in ("csv", "tsv"):
            written = _csv_rows(Path(path), tmp, rows, sniffed, limits)
        else:
            start, sheet = pipeline._sheet_rows(Path(path), report, limits)
            written = _table(((start + i, r) for i, r in enumerate(sheet)), tmp, rows)
        os.replace(tmp, target)
        report.valid = report.total = written
    except InputError as e:
        report.fatal = Issue(e.code, params=dict(e.params))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        report.fatal = Issue("file_unreadable", params={"detail": type(e).__name__})
    finally:
        tmp.unlink(missing_ok=True)
    return report


def _lines(path: Path, out: Path, rows: set[int]) -> int:
    written = 0
    with path.open("rb") as src, out.open("wb") as dst:
        for number, line in enumerate(src, 1):
            if number in rows:
                dst.write(line if line.endswith(b"\n") else line + b"\n")
                written += 1
    return written


def _csv_rows(path: Path, out: Path, rows: set[int], sniffed: Any, limits: Limits) -> int:
    csv.field_size_limit(limits.max_cell_chars)
    with path.open("rb") as fb:
        text = rowscan.CsvRows(
            fb, sniffed.encoding or "utf-8", sniffed.delimiter or ",", limits.max_cell_chars
        )
        reader = csv.reader(text.lines(), delimiter=sniffed.delimiter or ",")
        return _table(enumerate(reader, 1), out, rows)


def _table(numbered: Iterable[tuple[int, list[Any]]], out: Path, rows: set[int]) -> int:
    """The header (the first row that looks like one), then the chosen rows after it."""
    written = 0
    with out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        header = False
        for number, row in numbered:
            cells = ["" if c is None else str(c) for c in row]
            if not header:
                if pipeline._is_header(row):
                    w.writerow([*cells, ORIGINAL_ROW])
                    header = True
                continue
            if number in rows:
                w.writerow([*cells, str(number)])
                written += 1
    return written
