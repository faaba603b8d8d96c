"""A spreadsheet's used range and merged area, read before any reader builds a grid.

The readers allocate a sheet's used range densely: one cell at XFD1048576 makes a 4.7 KB
xlsx ask for 512 GiB, and ten thousand overlapping merges make filling them quadratic.
So the raw sheet data is scanned first (xlsx: the sheet's XML; xls: the BIFF records of
the OLE2 Workbook stream; ods: content.xml with its repeat counts) for the furthest cell
and the merged ranges, and a sheet absurd for a prompt list is refused with the sheet's
name and its extent. The scan keeps no cells, only a few counters, and stops early at the
first bound crossed. What it computes is an upper bound of what a reader would allocate:
positions a file leaves implicit are counted as the reader counts them (previous + 1).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from batchjob.input.limits import InputError, Limits

try:
    from batchjob.input import _extent as _native
except ImportError:  # built without a C compiler: the Python loops below
    _native = None

_CHUNK = 1 << 20
_CARRY = 4096  # a tag cut by a chunk boundary is completed from the next chunk


def native_enabled() -> bool:
    return _native is not None and os.environ.get("BATCHJOB_NATIVE", "1") != "0"


@dataclass
class Extent:
    rows: int = 0  # furthest row, 1-based
    cols: int = 0  # furthest column, 1-based
    merged: int = 0  # cells covered by merged ranges, added up


def column_name(n: int) -> str:
    s = ""
    while n > 0:
        n, r = divmod(n - 1, 26)
        s = chr(65 + r) + s
    return s or "A"


def _column(letters: bytes) -> int:
    n = 0
    for c in letters.upper():
        n = n * 26 + (c - 64)
    return n


def check(sheet: str, e: Extent, limits: Limits) -> None:
    """Refuse a sheet whose extent is absurd for a prompt list."""
    corner = f"{column_name(e.cols)}{e.rows}"
    if e.cols > limits.max_sheet_columns:
        raise InputError(
            "limit_sheet_columns",
            sheet=sheet[:60],
            columns=e.cols,
            cell=corner,
            limit=limits.max_sheet_columns,
        )
    if e.rows * e.cols > limits.max_sheet_cells:
        raise InputError(
            "limit_sheet_cells",
            sheet=sheet[:60],
            rows=e.rows,
            columns=e.cols,
            cell=corner,
            limit=limits.max_sheet_cells,
        )
    if e.merged > limits.max_merged_cells:
        raise InputError(
            "limit_merged_cells", sheet=sheet[:60], cells=e.merged, limit=limits.max_merged_cells
        )


def _chunks(f: Iterable[bytes] | zipfile.ZipExtFile) -> Iterator[bytes]:
    """The stream in pieces; each piece ends at a '>' so no tag is cut in two."""
    carry = b""
    while True:
        chunk = f.read(_CHUNK)  # type: ignore[union-attr]
        if not chunk:
            if carry:
                yield carry
            return
        data = carry + chunk
        cut = data.rfind(b">") + 1
        if cut == 0 and len(data) > _CARRY:
            cut = len(data)  # no tag end at all: nothing to find in it
        carry = data[cut:]
        yield data[:cut]


# --- xlsx --------------------------------------------------------------------------------

_X_TAG = re.compile(rb"<(?:\w+:)?(row|c|mergeCell)\b([^>]*)>")
_X_R = re.compile(rb"""\br\s*=\s*["']([A-Za-z]{0,3})([0-9]{1,9})["']""")
_X_REF = re.compile(
    rb"""\bref\s*=\s*["']\$?([A-Za-z]{1,3})\$?([0-9]{1,9}):\$?([A-Za-z]{1,3})\$?([0-9]{1,9})["']"""
)


def xlsx_sheet_extent(stream: zipfile.ZipExtFile, limits: Limits) -> Extent:
    if native_enabled():
        state = (0, 0, 0, 0, 0)  # row, col, rows, cols, merged: as the loop below keeps them
        for data in _chunks(stream):
            state = _native.xlsx_scan(data, state)
            e = Extent(state[2], state[3], state[4])
            if _refused(e, limits):
                break
        return Extent(state[2], state[3], state[4])
    return _xlsx_sheet_extent(stream, limits)


def _refused(e: Extent, limits: Limits) -> bool:
    return (
        e.cols > limits.max_sheet_columns
        or e.rows * e.cols > limits.max_sheet_cells
        or (e.merged > limits.max_merged_cells)
    )


def _xlsx_sheet_extent(stream: zipfile.ZipExtFile, limits: Limits) -> Extent:
    """The reference (and the reading without a C compiler) of `_extent.xlsx_scan`."""
    e = Extent()
    row = col = 0
    for data in _chunks(stream):
        for m in _X_TAG.finditer(data):
            kind, attrs = m.group(1), m.group(2)
            if kind == b"c":
                r = _X_R.search(attrs)
                if r is not None and r.group(1):
                    col = _column(r.group(1))
                    row = max(row, int(r.group(2)))
                else:
                    col += 1
                if attrs.endswith(b"/"):
                    continue  # an empty cell (a style only) does not extend the range
                if col > e.cols:
                    e.cols = col
                if row > e.rows:
                    e.rows = row
            elif kind == b"row":
                r = _X_R.search(attrs)
                row = int(r.group(2)) if r is not None and not r.group(1) else row + 1
                col = 0
            else:
                ref = _X_REF.search(attrs)
                if ref is not None:
                    c1, r1, c2, r2 = _column(ref[1]), int(ref[2]), _column(ref[3]), int(ref[4])
                    e.merged += (abs(r2 - r1) + 1) * (abs(c2 - c1) + 1)
        if _refused(e, limits):
            break  # already refused: no need to read on
    return e


_SHEET = re.compile(rb"<(?:\w+:)?sheet\b([^>]*)>")
_REL = re.compile(rb"<(?:\w+:)?Relationship\b([^>]*)>")


def _attr(attrs: bytes, name: bytes) -> str | None:
    m = re.search(rb"(?:^|\s)(?:\w+:)?" + name + rb"""\s*=\s*["']([^"']*)["']""", attrs)
    return html.unescape(m.group(1).decode("utf-8", "replace")) if m else None


def xlsx_sheets(z: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name -> its worksheet member, in workbook order."""
    names = set(z.namelist())
    try:
        book = z.read("xl/workbook.xml")[: 4 * _CHUNK]
        rels = z.read("xl/_rels/workbook.xml.rels")[: 4 * _CHUNK]
    except KeyError:
        return {}
    targets = {}
    for m in _REL.finditer(rels):
        rid, target = _attr(m.group(1), b"Id"), _attr(m.group(1), b"Target")
        if rid and target:
            target = target.lstrip("/")
            targets[rid] = target if target.startswith("xl/") else "xl/" + target
    out = {}
    for m in _SHEET.finditer(book):
        name, rid = _attr(m.group(1), b"name"), _attr(m.group(1), b"id")
        member = targets.get(rid or "")
        if name is not None and member in names:
            out[name] = member
    return out


# --- ods ---------------------------------------------------------------------------------

# The name must end where the tag's name ends: "table" is a prefix of "table-row".
_O_TAG = re.compile(rb"<(/?)table:(table-row|table-cell|covered-table-cell|table)(?=[\s/>])([^>]*)>")
_O_REP_ROWS = re.compile(rb"""table:number-rows-repeated\s*=\s*["']([0-9]{1,12})["']""")
_O_REP_COLS = re.compile(rb"""table:number-columns-repeated\s*=\s*["']([0-9]{1,12})["']""")
_O_SPAN = re.compile(rb"""table:number-(rows|columns)-spanned\s*=\s*["']([0-9]{1,12})["']""")


def check_ods(path: str | os.PathLike[str], limits: Limits) -> None:
    """Rows and cells repeated N times count N times, as the reader expands them."""
    with zipfile.ZipFile(path) as z, z.open("content.xml") as f:
        name, e, row, col, rep = "", Extent(), 0, 0, 1
        for data in _chunks(f):
            for m in _O_TAG.finditer(data):
                closing, kind, attrs = m.group(1), m.group(2), m.group(3)
                if kind == b"table":
                    if closing:
                        check(name, e, limits)
                    else:
                        name, e, row = _attr(attrs, b"name") or "", Extent(), 0
                elif kind == b"table-row" and not closing:
                    r = _O_REP_ROWS.search(attrs)
                    rep = int(r.group(1)) if r else 1
                    row += rep
                    col = 0
                elif not closing:  # a cell, covered or not
                    c = _O_REP_COLS.search(attrs)
                    col += int(c.group(1)) if c else 1
                    if b"value-type" in attrs:  # empty cells (styles, fillers) do not count
                        e.cols = max(e.cols, col)
                        e.rows = max(e.rows, row)
                    spans = dict(_O_SPAN.findall(attrs))
                    if spans:
                        e.merged += int(spans.get(b"rows", 1)) * int(spans.get(b"columns", 1)) * rep
            check(name, e, limits)


# --- xls ---------------------------------------------------------------------------------

_BOF, _EOF, _BOUNDSHEET, _MERGED = 0x0809, 0x000A, 0x0085, 0x00E5
# Records of cells with a value (blank cells do not extend the range a reader builds).
_CELLS = {0x0203, 0x027E, 0x00FD, 0x0204, 0x0205, 0x0006, 0x00D6, 0x0406, 0x0003, 0x0004, 0x0005}
_MULRK = 0x00BD  # row, first column, values..., last column


def _records(data: bytes, pos: int) -> Iterator[tuple[int, int, int]]:
    """(type, start of its data, length) from `pos` to the end of the substream."""
    n = len(data)
    while pos + 4 <= n:
        typ, size = struct.unpack_from("<HH", data, pos)
        yield typ, pos + 4, min(size, n - pos - 4)
        pos += 4 + size


def xls_extents(data: bytes) -> Iterator[tuple[str, Extent]]:
    """Each sheet of a BIFF8 Workbook stream with its extent."""
    sheets: list[tuple[str, int]] = []
    for typ, at, size in _records(data, 0):
        if typ == _BOUNDSHEET and size >= 8:
            offset = struct.unpack_from("<I", data, at)[0]
            cch, high = data[at + 6], data[at + 7] & 1
            raw = data[at + 8 : at + 8 + cch * (2 if high else 1)]
            sheets.append((raw.decode("utf-16-le" if high else "latin-1", "replace"), offset))
        elif typ == _EOF:
            break
    for name, offset in sheets:
        if native_enabled():
            yield name, Extent(*_native.biff_extent(data, offset))
        else:
            yield name, biff_extent(data, offset)


def biff_extent(data: bytes, offset: int) -> Extent:
    """The reference (and the reading without a C compiler) of `_extent.biff_extent`."""
    e = Extent()
    for typ, at, size in _records(data, offset):
        if typ in _CELLS and size >= 4:
            r, c = struct.unpack_from("<HH", data, at)
            e.rows, e.cols = max(e.rows, r + 1), max(e.cols, c + 1)
        elif typ == _MULRK and size >= 6:
            r = struct.unpack_from("<H", data, at)[0]
            last = struct.unpack_from("<H", data, at + size - 2)[0]
            e.rows, e.cols = max(e.rows, r + 1), max(e.cols, last + 1)
        elif typ == _MERGED and size >= 2:
            count = min(struct.unpack_from("<H", data, at)[0], (size - 2) // 8)
            for i in range(count):
                r1, r2, c1, c2 = struct.unpack_from("<HHHH", data, at + 2 + 8 * i)
                e.merged += (abs(r2 - r1) + 1) * (abs(c2 - c1) + 1)
        elif typ == _EOF or (typ == _BOF and at - 4 != offset):
            break
    return e


def _stream(ole: Any, name: str, most: int) -> bytes:
    """The first `most` bytes of a top-level stream, each run of consecutive sectors read at
    once: olefile reads a stream a sector at a time (a seek, a read and a debug log each:
    half of a 16 MB XLS's conversion). A stream in the mini stream, or a chain that leaves
    the FAT, comes back on itself or ends before the stream does, is read by olefile (its
    checks, its errors)."""
    entry = next((k for k in ole.root.kids if k.name.lower() == name.lower()), None)
    if entry is None or entry.size < ole.minisectorcutoff:
        return bytes(ole.openstream(name).read(most))
    size, ss, fat = min(entry.size, most), ole.sectorsize, ole.fat
    runs: list[list[int]] = []  # [first sector, past the last]
    seen: set[int] = set()
    sect = entry.isectStart
    for _ in range(-(-size // ss)):  # as many sectors as the size needs
        if not 0 <= sect < len(fat) or sect in seen:  # off the FAT, or a cycle
            return bytes(ole.openstream(name).read(most))
        seen.add(sect)
        if runs and runs[-1][1] == sect:
            runs[-1][1] += 1
        else:
            runs.append([sect, sect + 1])
        sect = fat[sect]
    parts = []
    for first, past in runs:
        ole.fp.seek((first + 1) * ss)  # sector n starts after the header's sector
        parts.append(ole.fp.read((past - first) * ss))
    data = b"".join(parts)[:size]
    return data if len(data) == size else bytes(ole.openstream(name).read(most))


def check_xls(path: str | os.PathLike[str], limits: Limits) -> None:
    import olefile

    try:
        with olefile.OleFileIO(os.fspath(path)) as ole:
            stream = next((s for s in ("Workbook", "Book") if ole.exists(s)), None)
            if stream is None:
                raise InputError("spreadsheet_unreadable", detail="no workbook stream")
            data = _stream(ole, stream, limits.max_file_bytes + 1)
    except InputError:
        raise
    except Exception as e:  # olefile raises a variety of errors on damaged containers
        raise InputError("spreadsheet_unreadable", detail=type(e).__name__[:60]) from None
    for name, extent in xls_extents(data):
        check(name, extent, limits)


class Guard:
    """Checks a workbook's sheets before the reader builds them.

    xls and ods readers build every sheet when the workbook is opened, so all their sheets
    are checked by `before_open`; xlsx sheets are built one at a time, so each is checked
    by `before_sheet` just before (a large sheet that is never read does not count).
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str | None, limits: Limits) -> None:
        self.path, self.fmt, self.limits = path, fmt, limits
        self.members: dict[str, str] | None = None

    def before_open(self) -> None:
        with _refusing():
            if self.fmt == "ods":
                check_ods(self.path, self.limits)
            elif self.fmt == "xls":
                check_xls(self.path, self.limits)
            elif self.fmt == "xlsx":
                with zipfile.ZipFile(self.path) as z:
                    self.members = xlsx_sheets(z)

    def before_sheet(self, name: str) -> None:
        member = (self.members or {}).get(name)
        if self.fmt != "xlsx" or member is None:
            return
        with _refusing(), zipfile.ZipFile(self.path) as z, z.open(member) as f:
            check(name, xlsx_sheet_extent(f, self.limits), self.limits)


@contextlib.contextmanager
def _refusing() -> Iterator[None]:
    try:
        yield
    except (
        zipfile.BadZipFile,
        KeyError,
        EOFError,
        NotImplementedError,
        ValueError,
        struct.error,
        OSError,
    ) as e:
        raise InputError("spreadsheet_unreadable", detail=type(e).__name__[:60]) from None
