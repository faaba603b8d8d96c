"""Read any accepted file row by row, validate every row, stream canonical JSONL out.

One pass, bounded memory: rows are read lazily (csv/jsonl stream from disk; calamine
holds one sheet's cells natively, Python sees one row at a time), each row is checked
and, when an output is asked for, written at once to a temp file that is renamed into
place only when the whole file passed (or `skip_invalid` and at least one row did).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from batchjob.input import bounds, rowscan
from batchjob.input.columns import EXPECTED, field_for
from batchjob.input.detect import ENCODINGS_TRIED, Sniffed, sniff
from batchjob.input.jsonl import CLOCK_EVERY, Emit, read_jsonl
from batchjob.input.limits import InputError, Limits
from batchjob.input.report import Column, Issue, Report
from batchjob.input.validate import cell_text, has_sd_weights, simple_line

log = logging.getLogger("batchjob.input")

HEADER_SCAN_ROWS = 30


class _Clock:
    def __init__(self, limits: Limits) -> None:
        self.deadline = time.monotonic() + limits.max_parse_seconds
        self.limit = limits.max_parse_seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise InputError("limit_parse_time", limit=self.limit)


def inspect_file(path: str | os.PathLike[str], limits: Limits | None = None) -> Report:
    """Read and validate the whole file; write nothing."""
    return _run(Path(path), limits or Limits(), None)


def convert_file(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    limits: Limits | None = None,
) -> Report:
    """Write canonical JSONL to `out` atomically when the file converts.

    Nothing is written when the file has a fatal problem, no valid row, or invalid rows
    while `skip_invalid` is off.
    """
    writer = _AtomicLines(Path(out))
    try:
        report = _run(Path(path), limits or Limits(), writer)
    except BaseException:
        writer.abort()
        raise
    if report.fatal is None and report.valid > 0 and (report.invalid == 0 or skip_invalid):
        writer.commit()
    else:
        writer.abort()
    return report


def _run(path: Path, limits: Limits, sink: _AtomicLines | None) -> Report:
    report = Report(path=str(path))
    clock = _Clock(limits)
    try:
        sniffed = sniff(path, limits)
        report.format, report.encoding = sniffed.format, sniffed.encoding
        if sniffed.format in ("jsonl", "csv", "tsv"):
            _text(path, sniffed, report, limits, clock, sink)
        else:
            start, rows = _sheet_rows(path, report, limits)
            emit = sink.write if sink else None
            if rowscan.enabled():
                scan = rowscan.SheetRows(rows, limits.max_cell_chars)
                _table(start, iter(scan), report, limits, clock, emit, typed=True, on_header=scan.use)
            else:
                _table(start, rows, report, limits, clock, emit, typed=True)
        if report.fatal is None and report.total - report.skipped == 0:
            report.fatal = Issue("no_data_rows")
    except InputError as e:
        report.fatal = Issue(e.code, params=dict(e.params))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        report.fatal = Issue("file_missing")
    except BaseException as e:
        # A reader failed in a way no rule foresaw (a panic while iterating rows, too):
        # the file is refused, the caller goes on.
        _reraise_interrupts(e)
        log.warning("unreadable input (%s)", type(e).__name__)
        report.fatal = Issue("file_unreadable", params={"detail": type(e).__name__[:60]})
    return report


def _text(
    path: Path,
    sniffed: Sniffed,
    report: Report,
    limits: Limits,
    clock: _Clock,
    sink: _AtomicLines | None,
) -> None:
    """Parse with the likely encoding; when a later byte proves it wrong, start over with the next."""
    for encoding in (sniffed.encoding, *sniffed.fallbacks):
        vars(report).update(vars(Report(path=str(path), format=sniffed.format, encoding=encoding)))
        emit = sink.write if sink else None
        try:
            if sniffed.format == "jsonl":
                read_jsonl(path, encoding or "utf-8", report, limits, clock, emit)
            else:
                csv.field_size_limit(limits.max_cell_chars)
                delimiter = sniffed.delimiter or ","
                if rowscan.enabled():
                    with open(path, "rb") as fb:
                        scan = rowscan.CsvRows(fb, encoding or "utf-8", delimiter, limits.max_cell_chars)
                        _table(1, iter(scan), report, limits, clock, emit, typed=False, on_header=scan.use)
                else:
                    with open(path, "rb") as fb:
                        text = rowscan.CsvRows(fb, encoding or "utf-8", delimiter, limits.max_cell_chars)
                        rows = csv.reader(text.lines(), delimiter=delimiter)
                        _table(1, rows, report, limits, clock, emit, typed=False)
            return
        except UnicodeDecodeError:
            if sink:
                sink.reset()
    vars(report).update(vars(Report(path=str(path), format=sniffed.format)))
    raise InputError("encoding_unknown", tried=list(ENCODINGS_TRIED))


# --- tables (csv, tsv, xlsx, xls, ods) ---------------------------------------------------


def _sheet_rows(path: Path, report: Report, limits: Limits) -> tuple[int, Iterator[list[Any]]]:
    """The first sheet with a prompt header: (row number of its first row, its rows)."""
    from python_calamine import CalamineError, CalamineWorkbook

    guard = bounds.Guard(path, report.format, limits)
    try:
        guard.before_open()
        wb = CalamineWorkbook.from_path(str(path))
        names = [m.name for m in wb.sheets_metadata if str(m.typ).endswith("WorkSheet")] or list(
            wb.sheet_names
        )
        first_seen: list[str] | None = None
        for name in names:
            guard.before_sheet(name)
            sheet = wb.get_sheet_by_name(name)
            start, rows = _rows_of_sheet(sheet)
            head: list[list[Any]] = []
            for row in rows:
                head.append(row)
                if _is_header(row):
                    report.sheet = name
                    return start, chain(head, rows)
                if len(head) >= HEADER_SCAN_ROWS:
                    break
            if first_seen is None:
                first_seen = next((_texts(r) for r in head if _nonblank(r)), None)
        # No sheet has a prompt header: let _table report it against the first sheet.
        report.sheet = names[0] if names else None
        return 1, iter([first_seen] if first_seen else [])
    except InputError:
        raise
    except (CalamineError, OSError, ValueError, RuntimeError) as e:
        raise InputError("spreadsheet_unreadable", detail=type(e).__name__) from None
    except BaseException as e:
        _reraise_interrupts(e)
        raise InputError("spreadsheet_unreadable", detail=type(e).__name__[:60]) from None


def _reraise_interrupts(e: BaseException) -> None:
    """A native reader's panic is a BaseException (pyo3's PanicException): the file is
    unreadable. Interrupts and exits are not the file's doing, and running out of memory
    is reported as such by the parse worker: those go on."""
    if isinstance(e, KeyboardInterrupt | SystemExit | GeneratorExit | MemoryError):
        raise e


def _rows_of_sheet(sheet: Any) -> tuple[int, Iterator[list[Any]]]:
    r0, c0 = sheet.start or (0, 0)
    merges = sorted((a[0], a[1], b[0], b[1]) for a, b in (sheet.merged_cell_ranges or [])[:10_000])
    if not merges:
        return r0 + 1, iter(sheet.iter_rows())
    return r0 + 1, _filled(sheet, r0, c0, merges)


def _filled(sheet: Any, r0: int, c0: int, merges: list[tuple[int, int, int, int]]) -> Iterator[list[Any]]:
    # Merged cells keep their value in the top-left cell only; give every covered cell
    # that value, so a merged prompt or ratio applies to each of its rows.
    top_left: dict[tuple[int, int], Any] = {}
    active: list[tuple[int, int, int, int]] = []
    k = 0
    for i, row in enumerate(sheet.iter_rows()):
        r = r0 + i
        while k < len(merges) and merges[k][0] <= r:
            active.append(merges[k])
            k += 1
        if active:
            active = [m for m in active if m[2] >= r]
            row = list(row)
            for ra, ca, _rb, cb in active:
                for c in range(ca, min(cb, c0 + len(row) - 1) + 1):
                    j = c - c0
                    if j < 0:
                        continue
                    if r == ra and c == ca:
                        top_left[(ra, ca)] = row[j]
                    elif row[j] in ("", None):
                        row[j] = top_left.get((ra, ca), "")
        yield row


def _texts(row: list[Any]) -> list[str]:
    return [cell_text(v).strip() for v in row]


def _nonblank(row: list[Any]) -> bool:
    return any(v not in ("", None) and str(v).strip() for v in row)


def _is_header(row: list[Any]) -> bool:
    return any(isinstance(v, str) and field_for(v) == "prompt" for v in row)


def _map_columns(header: list[Any], report: Report) -> dict[str, int]:
    indices: dict[str, int] = {}
    for i, value in enumerate(header):
        name = cell_text(value).strip()
        if not name:
            continue
        field = field_for(name)
        note = None
        if field == "negative_prompt":
            field, note = None, "negative_prompt"
        elif field is None:
            note = "unknown"
        elif field in indices:
            field, note = None, "duplicate"
        else:
            indices[field] = i
        report.columns.append(Column(name[:100], i, field, note))
        if note:
            report.warn("column_ignored", None, name[:100], reason=note)
    return indices


@dataclass(frozen=True)
class _Columns:
    """Where the fields are in a table's rows, once its header has been read."""

    prompt: int
    ratio: int
    urls: int
    names: dict[str, str]  # field -> the column's name in the file, for row errors
    fields: list[str | None]  # by position: the field a column holds, if any


def _table(
    start: int,
    rows: Iterator[Any],
    report: Report,
    limits: Limits,
    clock: _Clock,
    emit: Emit | None,
    *,
    typed: bool,
    on_header: Callable[[_Columns], None] | None = None,
) -> None:
    """Find the header, map the columns, then check and emit every data row.

    `start` is the file row number of the first row; numbers run on from there.
    `on_header` is told the mapping as soon as the header is read (a native row reader
    starts then). Rows are lists of cells, or `rowscan.Run`s: stretches of rows read
    natively, which come with their lines and counts.
    """
    rownum = start - 1
    head: list[list[Any]] = []
    header: list[Any] | None = None
    columns: _Columns | None = None
    total = skipped = valid = invalid = 0
    try:
        for row in rows:
            rownum += 1
            if _is_header(row):
                header = row
                break
            head.append(row)
            if len(head) >= HEADER_SCAN_ROWS:
                break
        if header is None:
            seen = next((_texts(r) for r in head if _nonblank(r)), [])
            raise InputError(
                "no_prompt_column",
                columns=[c[:40] for c in seen if c][:20] or ["-"],
                expected=EXPECTED["prompt"],
                optional=[v for k, v in EXPECTED.items() if k != "prompt"],
            )
        report.header_row = rownum
        idx = _map_columns(header, report)
        fields: list[str | None] = [None] * (max(idx.values()) + 1)
        for f, i in idx.items():
            fields[i] = f
        columns = _Columns(
            idx["prompt"],
            idx.get("aspect_ratio", -1),
            idx.get("image_urls", -1),
            {c.field: c.name for c in report.columns if c.field},
            fields,
        )
        if on_header is not None:
            on_header(columns)
        report.kind = "simple"
        pi, ri, ui, names, fields = columns.prompt, columns.ratio, columns.urls, columns.names, columns.fields
        max_cell, max_rows = limits.max_cell_chars, limits.max_rows
        errors = report.errors
        for row in rows:
            if isinstance(row, rowscan.Run):  # a stretch of rows read natively, whole
                stretch = row.take(max_rows - (total - skipped), emit is not None)
                lines, n, blank = stretch[:3]
                good, bad = rowscan.record(report, rownum + 1, stretch, names)
                rownum += n
                total += n
                skipped += blank
                valid += good
                invalid += bad
                if lines and emit is not None:
                    emit(lines)
                clock.check()
                continue
            rownum += 1
            total += 1
            if total % CLOCK_EVERY == 0:
                clock.check()
            if typed:
                row = [
                    v if isinstance(v, str) else cell_text(v, fields[j] if j < len(fields) else None)
                    for j, v in enumerate(row)
                ]
                if row and max(map(len, row)) > max_cell:
                    raise InputError("limit_cell_length", row=rownum, limit=max_cell)
            if not "".join(row).strip():
                skipped += 1
                continue
            if total - skipped > max_rows:
                raise InputError("limit_rows", limit=max_rows)
            width = len(row)
            prompt = row[pi] if pi < width else ""
            line = simple_line(
                rownum,
                prompt,
                row[ri] if 0 <= ri < width else "",
                row[ui] if 0 <= ui < width else "",
                errors,
                names,
            )
            if line is None:
                invalid += 1
                continue
            valid += 1
            report.sent(rownum)
            if "(" in prompt and has_sd_weights(prompt):
                report.warn("sd_weight_syntax", rownum, names.get("prompt"))
            if emit is not None:
                emit(line)
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise InputError("limit_cell_length", row=rownum + 1, limit=limits.max_cell_chars) from None
        raise InputError("csv_malformed", row=rownum + 1) from None
    finally:
        if columns is not None:
            report.total, report.skipped = total, skipped
            report.valid, report.invalid = valid, invalid


# --- output ------------------------------------------------------------------------------


class _AtomicLines:
    """Lines go to a temp file beside the target; rename on commit, delete on abort."""

    def __init__(self, target: Path) -> None:
        self.target = target
        # A hidden sibling with a random suffix, created exclusively (0600).
        self.tmp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.tmp")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.f = os.fdopen(fd, "wb", buffering=1 << 20)
        self.batch: list[bytes] = []

    def write(self, line: bytes) -> None:
        """One line, or many lines at once (rows read natively)."""
        # Lines are gathered and written in batches: one write call per line costs more
        # than the JSON encoding of the line.
        self.batch.append(line)
        if len(self.batch) >= 4096 or len(line) > 65536:
            self.f.writelines(self.batch)
            self.batch.clear()

    def reset(self) -> None:
        self.batch.clear()
        self.f.seek(0)
        self.f.truncate()

    def commit(self) -> None:
        self.f.writelines(self.batch)
        self.batch.clear()
        self.f.close()
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
