"""Table rows read by the native scanner where it can, by Python where it cannot.

`batchjob/input/_rowscan.c` takes the common rows (a prompt, a ratio, public image URLs)
whole: tokenized, checked and written as canonical lines without a Python object per
cell. Every other row (one with a problem to report, an unusual quoting form, a host not
yet judged) comes out as a plain row for the pipeline's own checks, so the results are
the same as reading every row in Python, only faster. Without the compiled module (no C
compiler at install time) or with BATCHJOB_NATIVE=0, the pipeline reads every row itself.

The pipeline iterates these readers like any row iterator. Besides rows (lists) they
yield the reader itself, a `Run`: the pipeline calls `take()` with its row budget and
gets the lines, row count and blank count of the rows read natively.
"""

from __future__ import annotations

import codecs
import csv
import logging
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import IO, TYPE_CHECKING, Any

from batchjob.input import validate

if TYPE_CHECKING:  # the pipeline imports this module; no cycle at run time
    from batchjob.input.pipeline import _Columns
    from batchjob.input.report import Report

try:
    from batchjob.input import _rowscan as _native
except ImportError:  # built without a C compiler
    _native = None

log = logging.getLogger("batchjob.input")

CHUNK = 1 << 20  # bytes read at a time: memory stays flat however large the file
BATCH = 8192  # rows per native call; the parse clock is checked between calls
_LONG_RECORD = 4 << 20  # a record still open after this many bytes goes to Python's csv

# How a native CSV scan stopped (batchjob/input/_rowscan.c).
_END, _PYTHON, _CAP, _MORE, _BATCH = range(5)


def enabled() -> bool:
    return _native is not None and os.environ.get("BATCHJOB_NATIVE", "1") != "0"


PROTOCOL = 5  # the version of _rowscan.c's functions this module speaks


def usable(module: Any) -> bool:
    """Whether a built scanner matches this code (a working copy may hold a stale build)."""
    return getattr(module, "PROTOCOL", None) == PROTOCOL


def _configure() -> None:
    global _native
    if _native is None:
        return
    if not usable(_native):
        log.warning("native row scanner not used: built from other sources (reinstall to rebuild)")
        _native = None
        return
    v = validate
    try:
        _native.configure(
            v._PREFIX,
            v._FILE_PART,
            v._MIME_TAIL["image/jpeg"],
            dict(v._TAIL_BY_EXT),
            dict(v._CONFIGS),
            v._host_cache,
            v._ratio_cache,
        )
    except (TypeError, ValueError) as e:  # constants it cannot hold: read every row in Python
        log.warning("native row scanner not used (%s)", e)
        _native = None


_configure()

Row = list[Any]
# Rows read natively, in a row: the lines of the rows taken, how many rows, how many blank
# (those come first), the indexes among them of rows whose prompt has weight syntax (to be
# warned about), and (index, ratio cell) of rows whose one problem is an aspect ratio Python
# has refused before (each an invalid row).
Stretch = tuple[bytes, int, int, "tuple[int, ...] | list[int]", "tuple[()] | list[tuple[int, str]]"]


def record(report: Report, first: int, stretch: Stretch, names: dict[str, str]) -> tuple[int, int]:
    """A stretch in the report, as Python's checks would have put its rows one by one
    (`first`: the number of its first row): which rows became lines, the weight warnings,
    the refused rows' errors. Returns its (valid, invalid) rows."""
    _, n, blank, warned, refused = stretch
    if warned:
        report.warn_rows("sd_weight_syntax", [first + k for k in warned], names.get("prompt"))
    start = blank  # a stretch's blank rows come first
    if refused:
        report.sent(first + start, refused[0][0] - start)  # may go on from the last stretch
        start = refused[0][0] + 1
        runs = report.line_rows  # after a refused row, each run of lines is a new one
        for k, _ in islice(refused, 1, None):
            if k > start:
                runs.append([first + start, k - start])
            start = k + 1
        report.errors += validate.ratio_issues(first, refused, names)
    report.sent(first + start, n - start)
    return n - blank - len(refused), len(refused)


class Run(ABC):
    """Rows read natively: `take` reads the next stretch of them.

    A native scan gives parts in file order: stretches of rows it read, and between them
    the rows it left to the pipeline's checks. Iterating a reader yields the reader itself
    for each stretch (the pipeline calls `take`) and each row left to Python as a list.
    """

    columns: tuple[int, int, int] | None = None  # prompt, ratio, urls; -1 when absent

    def __init__(self) -> None:
        self.queue: deque[Stretch | Row] = deque()

    def use(self, columns: _Columns) -> None:
        """The table's header was read: where its prompt, ratio and URLs are."""
        self.columns = (columns.prompt, columns.ratio, columns.urls)

    def take(self, cap: int, build: bool) -> Stretch:
        """(lines, rows, blank rows, warned rows, refused rows) of the next stretch; at
        most `cap` non-blank rows.

        `build`: write the lines (False when only inspecting: counts only)."""
        if not self.queue:
            self._scan(cap, build)
        if self.queue and isinstance(self.queue[0], tuple):
            return self.queue.popleft()  # type: ignore[return-value]
        return b"", 0, 0, (), ()

    def _queued(self) -> Iterator[Row | Run]:
        while self.queue:
            yield self.queue.popleft() if isinstance(self.queue[0], list) else self  # type: ignore[misc]

    @abstractmethod
    def _scan(self, cap: int, build: bool) -> None:
        """Scan natively; the parts go to `queue`. The row budget `cap` counts every
        non-blank row of them, those left to Python too."""


def _last_eol(buf: bytearray, start: int, end: int) -> int:
    return max(buf.rfind(b"\n", start, end), buf.rfind(b"\r", start, end))


class CsvRows(Run):
    """Records of a delimited text file, as csv.reader(open(path, newline="")) gives them.

    The text comes from `lines()`, which the pipeline's Python-only reading uses as well:
    both read the same text in the same order, so a file fails the same way on both (an
    undecodable byte is raised only when the text before it has been read, wherever the
    byte falls in a block).
    """

    def __init__(self, f: IO[bytes], encoding: str, delimiter: str, max_cell: int) -> None:
        super().__init__()
        self.f = f
        self.encoding = encoding
        self.decoder = codecs.getincrementaldecoder(encoding)("strict")
        self.failed: UnicodeDecodeError | None = None
        # UTF-8 goes to the scanner as it is (decoded only to check it); any other
        # encoding is decoded and handed over as UTF-8.
        self.raw = encoding in ("utf-8", "utf-8-sig")
        self.bom = encoding == "utf-8-sig"
        self.delimiter = delimiter
        self.max_cell = max_cell
        self.buf = bytearray()
        self.pos = 0
        self.searched = 0  # no line end in buf[pos:searched]: a long line is searched once
        self.eof = False
        self.stop = _PYTHON

    def _fill(self) -> None:
        if self.failed is not None:
            raise self.failed  # the caller tries the next encoding
        chunk = self.f.read(CHUNK)
        if chunk:
            pending = self.decoder.getstate()[0]
            try:
                text = self.decoder.decode(chunk)
            except UnicodeDecodeError as e:
                # Keep the text before the bad byte (e.start counts from the decoder's
                # pending bytes); the error comes when the reader needs more than that.
                self.failed = e
                text = (pending + chunk)[: e.start].decode(self.encoding)
                chunk = chunk[: max(0, e.start - len(pending))]
            data = chunk if self.raw else text.encode("utf-8")
        else:
            self.eof = True
            data = self.decoder.decode(b"", True).encode("utf-8")
        if self.pos:
            del self.buf[: self.pos]
            self.searched = max(0, self.searched - self.pos)
            self.pos = 0
        self.buf += data
        if self.bom and (len(self.buf) >= 3 or self.eof):  # nothing is read before: no line end yet
            self.bom = False
            if self.buf.startswith(codecs.BOM_UTF8):
                del self.buf[:3]

    def lines(self) -> Iterator[str]:
        """The text, line by line, with its line ends (as open(newline="") gives them)."""
        while True:
            buf = self.buf
            start = max(self.pos, self.searched)
            last = _last_eol(buf, start, len(buf))
            if last >= 0 and last == len(buf) - 1 and buf[last] == 13 and not self.eof:
                last = _last_eol(buf, start, last)  # a "\r" at the end may yet be followed by "\n"
            if last < 0:
                if self.eof:
                    if self.pos < len(buf):
                        line = buf[self.pos :]
                        self.pos = len(buf)
                        yield line.decode("utf-8")
                    return
                self.searched = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
                self._fill()
                continue
            # Every whole line found, split at once (bytes.splitlines splits at exactly
            # \n, \r\n and \r); pos moves line by line, as a csv.reader may stop anywhere.
            for line in buf[self.pos : last + 1].splitlines(True):
                self.pos += len(line)
                yield line.decode("utf-8")

    def _python_row(self) -> Row | None:
        # csv.reader takes lines until its record is whole and no further, so the next
        # record starts where it stopped.
        return next(csv.reader(self.lines(), delimiter=self.delimiter), None)

    def __iter__(self) -> Iterator[Row | Run]:
        while True:
            if self.columns is not None:
                yield self
                yield from self._queued()
                if self.stop == _END:
                    return
                if self.stop in (_MORE, _BATCH):
                    continue
            row = self._python_row()
            if row is None:
                return
            yield row

    def _scan(self, cap: int, build: bool) -> None:
        assert self.columns is not None and _native is not None
        if self.pos >= len(self.buf) and not self.eof:
            self._fill()
        pi, ri, ui = self.columns
        parts, self.pos, self.stop = _native.csv_run(
            self.buf, self.pos, self.eof, ord(self.delimiter), pi, ri, ui, self.max_cell, cap, BATCH, build
        )
        self.queue.extend(parts)
        if self.stop == _MORE:
            if len(self.buf) - self.pos > _LONG_RECORD:
                self.stop = _PYTHON  # one huge record: Python's csv applies the cell limit
            else:
                self._fill()


class SheetRows(Run):
    """A spreadsheet's rows (lists of cell values), the common ones read natively."""

    def __init__(self, rows: Iterator[Row], max_cell: int) -> None:
        super().__init__()
        self.rows = rows
        self.max_cell = max_cell
        self.done = False

    def __iter__(self) -> Iterator[Row | Run]:
        for row in self.rows:
            yield row
            if self.columns is not None:
                break
        else:
            return
        while not self.done:
            yield self
            yield from self._queued()

    def _scan(self, cap: int, build: bool) -> None:
        assert self.columns is not None and _native is not None
        pi, ri, ui = self.columns
        parts, self.done = _native.sheet_run(self.rows, pi, ri, ui, self.max_cell, cap, BATCH, build)
        self.queue.extend(parts)
