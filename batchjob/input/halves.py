"""A large CSV converted in two processes, one half each, for the command line.

The file is cut at a line end where the count of quote characters before it is even, which
is a record boundary in well-formed CSV. Whether it really was one is checked, not assumed:
the first half is parsed with a sentinel record appended, and only when that sentinel comes
out as a record of its own did the first half end between records (inside a quoted field it
would have been swallowed). Each process streams its own byte range of the file. The parent
reads the header, forks a child for the second half with the column mapping, converts the
first half itself, then adds the child's counts, row problems (renumbered) and lines.
Whenever anything is off (the cut, a decoding error, any failure in either half) the caller
converts the whole file in one process instead, so the result is always the one-process
result.
"""

from __future__ import annotations

import contextlib
import csv
import io
import multiprocessing
import os
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchjob.input.detect import Sniffed
from batchjob.input.limits import InputError, Limits
from batchjob.input.report import WARNINGS_KEPT_PER_CODE, Issue, Report

if TYPE_CHECKING:  # the pipeline imports this module lazily; no cycle at run time
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from batchjob.input.pipeline import _AtomicLines, _Clock, _Columns

MIN_BYTES = 4 << 20  # below this, forking costs more than it saves
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030")  # quote and newline bytes occur only as themselves
_SENTINEL = "\ufdd0end of the first half\ufdd0"  # a noncharacter: no real cell is this
_SCAN_LINES = 10_000  # how far past the middle to look for a cut


def cut_point(path: Path, size: int) -> int | None:
    """A line end near the middle with an even number of quote characters before it."""
    middle = size // 2
    quotes = 0
    with open(path, "rb") as f:
        while f.tell() < middle:  # counted in blocks: the file is never held whole
            quotes += f.read(min(1 << 20, middle - f.tell())).count(b'"')
        tail = f.read(1 << 20)  # lines past the middle
    pos = 0
    for _ in range(_SCAN_LINES):
        nl = tail.find(b"\n", pos)
        if nl < 0 or middle + nl + 1 >= size:
            return None
        quotes += tail.count(b'"', pos, nl + 1)
        pos = nl + 1
        if quotes % 2 == 0:
            return middle + pos
    return None


class _Window(io.RawIOBase):
    """Bytes [start, end) of a file, as a stream."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        super().__init__()
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed with the window
        self._f.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        got = self._f.readinto(memoryview(buffer)[:n]) or 0
        self._left -= got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


def _lines(path: Path, start: int, end: int, encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(
        io.BufferedReader(_Window(path, start, end), 1 << 16), encoding=encoding, newline=""
    )


def _until_sentinel(rows: Iterator[list[str]], ended_cleanly: list[bool]) -> Iterator[list[str]]:
    """The rows before the sentinel; records whether the sentinel was a record of its own."""
    previous: list[str] | None = None
    for row in rows:
        if previous is not None:
            yield previous
        previous = row
    ended_cleanly.append(previous == [_SENTINEL])


def _second_half(
    path: Path,
    cut: int,
    size: int,
    encoding: str,
    delimiter: str,
    columns: _Columns,
    limits: Limits,
    clock: _Clock,
    part: Path,
    conn: Connection,
) -> None:
    from batchjob.input.pipeline import _table

    result: dict[str, Any] = {"ok": False}
    try:
        report = Report(path="")
        csv.field_size_limit(limits.max_cell_chars)
        second = "utf-8" if encoding == "utf-8-sig" else encoding  # no BOM in the middle
        with _lines(path, cut, size, second) as text, open(part, "wb", buffering=1 << 20) as f:
            _table(
                1,
                csv.reader(text, delimiter=delimiter),
                report,
                limits,
                clock,
                f.write,
                typed=False,
                columns=columns,
            )
        result = {
            "ok": True,
            "counts": (report.total, report.skipped, report.valid, report.invalid),
            "errors": report.errors,
            "warnings": report.warnings,
            "warning_counts": report.warning_counts,
        }
    except BaseException:  # any failure: the parent converts in one process
        result = {"ok": False}
    finally:
        conn.send(result)
        conn.close()


def convert_halves(
    path: Path,
    sniffed: Sniffed,
    encoding: str,
    report: Report,
    limits: Limits,
    clock: _Clock,
    sink: _AtomicLines,
) -> bool:
    """Convert `path` in two processes into `sink`. False: nothing usable, start over."""
    from batchjob.input.pipeline import _table

    size = path.stat().st_size
    cut = cut_point(path, size)
    if cut is None:
        return False
    ctx = multiprocessing.get_context("fork")  # the command line is one thread
    receive, send = ctx.Pipe(duplex=False)
    part = sink.tmp.with_name(sink.tmp.name + ".part")
    children: list[BaseProcess] = []
    delimiter = sniffed.delimiter or ","

    def start_second_half(columns: _Columns) -> None:
        child = ctx.Process(
            target=_second_half,
            args=(path, cut, size, encoding, delimiter, columns, limits, clock, part, send),
            daemon=True,
        )
        child.start()
        children.append(child)
        send.close()  # the child's end now: if the child dies without a word, recv() sees EOF

    ended_cleanly: list[bool] = []
    done = False
    try:
        csv.field_size_limit(limits.max_cell_chars)
        with _lines(path, 0, cut, encoding) as text:
            rows = _until_sentinel(
                csv.reader(chain(text, [_SENTINEL + "\n"]), delimiter=delimiter), ended_cleanly
            )
            try:
                _table(1, rows, report, limits, clock, sink.write, typed=False, on_header=start_second_half)
            except InputError as e:
                if e.code == "limit_parse_time":
                    raise  # out of time: one process would be too
                return False
            except UnicodeDecodeError:
                return False
        if not children or ended_cleanly != [True]:
            return False
        try:
            second = receive.recv()
        except EOFError:
            return False
        if not second.get("ok"):
            return False
        _merge(report, second, offset=(report.header_row or 0) + report.total)
        if report.total - report.skipped > limits.max_rows:
            raise InputError("limit_rows", limit=limits.max_rows)
        sink.append_file(part)
        done = True
        return True
    finally:
        for child in children:
            if not done:
                child.kill()  # its half is of no use now
            child.join(timeout=60)
        receive.close()
        send.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)


def _merge(report: Report, second: dict[str, Any], offset: int) -> None:
    total, skipped, valid, invalid = second["counts"]
    report.total += total
    report.skipped += skipped
    report.valid += valid
    report.invalid += invalid
    report.errors.extend(_renumbered(second["errors"], offset))
    for w in _renumbered(second["warnings"], offset):
        if sum(x.code == w.code for x in report.warnings) < WARNINGS_KEPT_PER_CODE:
            report.warnings.append(w)
    for code, n in second["warning_counts"].items():
        report.warning_counts[code] = report.warning_counts.get(code, 0) + n


def _renumbered(issues: list[Issue], offset: int) -> list[Issue]:
    return [Issue(i.code, None if i.row is None else i.row + offset, i.column, i.params) for i in issues]
