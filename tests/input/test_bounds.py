"""Sheet extents: the C scanner (`_extent.c`) gives what the Python reference gives.

Worksheet XML made of awkward fragments (namespace prefixes, quotes of both kinds, cells
without positions, self-closing cells, tags that only look like cells, junk bytes) and
mutated BIFF streams, read both ways; plus the figures a reader would really build.
`scripts/sanitize` runs these under ASan + UBSan.
"""

from __future__ import annotations

import io
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchjob.input import bounds
from batchjob.input.limits import Limits
from tests.hostile import _mutate

native = pytest.mark.skipif(bounds._native is None, reason="the extent scanner is not built here")
SAT = 1 << 60  # the C scanner saturates the merged area there

FRAGMENTS = st.sampled_from(
    [
        '<row r="3">',
        "<row>",
        '<row r="B3">',
        "</row>",
        '<c r="AB12" t="s"><v>1</v></c>',
        '<c r="XFD1048576"><v>x</v></c>',
        '<c r="XFD1" s="1"/>',
        "<c><v>2</v></c>",
        "<c/>",
        "<x:c r='B2'><x:v>1</x:v></x:c>",
        '<c r = "c7" >',
        '<c r="ABCD1">',
        '<c r="A1234567890">',
        '<c r="5">',
        '<c t="s" r="Q9">',
        '<c xr="Z9">',
        "<cols><col min='1'/></cols>",
        "<c:foo>",
        "<cell>",
        '<mergeCell ref="$A$1:C3"/>',
        "<mergeCell ref='B2:A1'/>",
        '<mergeCell ref="A1:XFD1048576"/>',
        '<mergeCells count="2">',
        '<mergeCell ref="A1">',
        "<row r='1048576' spans='1:3'>",
        "<ab:cd:row>",
        "<",
        ">",
        "r=",
        '"',
        "\x00\xff",
        " ",
    ]
)


class _Stream(io.BytesIO):
    pass


def _both(xml: bytes) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    limits = Limits(max_sheet_columns=10**9, max_sheet_cells=10**30, max_merged_cells=10**30)
    py = bounds._xlsx_sheet_extent(_Stream(xml), limits)  # type: ignore[arg-type]
    state = (0, 0, 0, 0, 0)
    for chunk in bounds._chunks(_Stream(xml)):  # type: ignore[arg-type]
        state = bounds._native.xlsx_scan(chunk, state)
    return (py.rows, py.cols, min(py.merged, SAT)), (state[2], state[3], state[4])


@native
@settings(max_examples=400, deadline=None)
@given(st.lists(FRAGMENTS, max_size=60).map("".join))
def test_xlsx_scan_matches_the_reference(xml):
    py, c = _both(xml.encode("utf-8", "surrogateescape"))
    assert c == py


@native
def test_xlsx_scan_on_mutated_sheets():
    rng = random.Random(20261202)
    base = (
        b'<worksheet><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1"><v>1</v></c></row>'
        b"<row><c><v>2</v></c><c/><c r='F2'/></row></sheetData>"
        b'<mergeCells count="1"><mergeCell ref="A3:B9"/></mergeCells></worksheet>'
    )
    for _ in range(int(os.environ.get("BJB_FUZZ_COUNT", "600"))):
        data = _mutate(base, rng, rng.randrange(1, 10))
        py, c = _both(data)
        assert c == py, data


def _biff(records: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<HH", t, len(d)) + d for t, d in records)


@native
def test_biff_extent_matches_the_reference_on_mutated_streams():
    sheet = _biff(
        [
            (0x0809, b"\x00\x06\x10\x00" + b"\x00" * 12),  # BOF
            (0x0203, struct.pack("<HHH", 4, 2, 0) + b"\x00" * 8),  # NUMBER at (4, 2)
            (0x00BD, struct.pack("<HH", 9, 1) + b"\x00" * 12 + struct.pack("<H", 7)),  # MULRK
            (
                0x00E5,
                struct.pack("<H", 2) + struct.pack("<HHHH", 0, 3, 0, 1) + struct.pack("<HHHH", 9, 1, 5, 2),
            ),
            (0x0201, struct.pack("<HHH", 60000, 250, 0)),  # BLANK: not counted
            (0x000A, b""),  # EOF
            (0x0203, struct.pack("<HHH", 65535, 255, 0) + b"\x00" * 8),  # after EOF: not counted
        ]
    )
    assert bounds.biff_extent(sheet, 0) == bounds.Extent(10, 8, 4 * 2 + 9 * 4)
    rng = random.Random(20261202)
    for _ in range(int(os.environ.get("BJB_FUZZ_COUNT", "600"))):
        data = _mutate(sheet, rng, rng.randrange(1, 12))
        offset = rng.choice([0, 0, 0, 1, 4, len(data), len(data) + 5])
        py = bounds.biff_extent(data, offset)
        assert bounds.Extent(*bounds._native.biff_extent(data, offset)) == py, (data, offset)


def test_empty_and_styled_cells_do_not_extend_the_range(tmp_path):
    xml = (
        b'<worksheet><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>prompt</t></is></c>'
        b'<c r="XFD1" s="3"/></row><row r="1048576"><c r="B1048576" s="1"/></row></sheetData></worksheet>'
    )
    for reader in (bounds._xlsx_sheet_extent, bounds.xlsx_sheet_extent):
        assert reader(_Stream(xml), Limits()) == bounds.Extent(1, 1, 0)  # type: ignore[arg-type]


def _ods(path, table: str) -> str:
    import zipfile

    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f'<office:body><office:spreadsheet><table:table table:name="Prompts">{table}'
        "</table:table></office:spreadsheet></office:body></office:document-content>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        z.writestr("content.xml", content)
    return str(path)


CELL = '<table:table-cell office:value-type="string"><text:p>{}</text:p></table:table-cell>'


def test_ods_repeats_count_as_the_reader_expands_them(tmp_path):
    header = f"<table:table-row>{CELL.format('prompt')}</table:table-row>"
    # Filler rows and columns without a value, as spreadsheet programs write them: read.
    filler = (
        '<table:table-row table:number-rows-repeated="1048570">'
        '<table:table-cell table:number-columns-repeated="1024"/></table:table-row>'
    )
    bounds.check_ods(_ods(tmp_path / "ok.ods", header + filler), Limits())
    # A value repeated across 16,384 columns, or down a million rows: refused.
    wide = (
        '<table:table-row><table:table-cell office:value-type="string" '
        'table:number-columns-repeated="16384"/>'
    )
    with pytest.raises(bounds.InputError) as e:
        bounds.check_ods(_ods(tmp_path / "wide.ods", header + wide + "</table:table-row>"), Limits())
    assert e.value.code == "limit_sheet_columns" and e.value.params["sheet"] == "Prompts"
    tall = f'<table:table-row table:number-rows-repeated="2000000">{CELL.format("x") * 6}</table:table-row>'
    with pytest.raises(bounds.InputError) as e:
        bounds.check_ods(_ods(tmp_path / "tall.ods", header + tall), Limits())
    assert e.value.code == "limit_sheet_cells" and e.value.params["rows"] == 2_000_001
    merged = (
        '<table:table-row><table:table-cell office:value-type="string" table:number-columns-spanned="500" '
        'table:number-rows-spanned="5000"/></table:table-row>'
    )
    with pytest.raises(bounds.InputError) as e:
        bounds.check_ods(_ods(tmp_path / "merged.ods", header + merged), Limits())
    assert e.value.code == "limit_merged_cells"


def _olefile_read(path, name: str, most: int) -> bytes | str:
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            return bytes(ole.openstream(name).read(most))
    except Exception as e:
        return type(e).__name__


def _ours(path, name: str, most: int) -> bytes | str:
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            return bounds._stream(ole, name, most)
    except Exception as e:
        return type(e).__name__


def test_a_workbook_stream_read_in_runs_is_olefiles_stream(tmp_path):
    """The workbook stream, its consecutive sectors read at once, is byte for byte what
    olefile reads a sector at a time: whole, cut at a limit, and from a small workbook
    whose stream lives in the mini stream."""
    from tests.files import xls

    big = xls(tmp_path / "big.xls", [["prompt", "n"]] + [[f"a fox number {i}", i] for i in range(3000)])
    small = xls(tmp_path / "small.xls", [["prompt"], ["fox"]])
    for path in (big, small):
        for most in (1 << 30, 10_000, 513):
            want = _olefile_read(path, "Workbook", most)
            assert isinstance(want, bytes) and _ours(path, "Workbook", most) == want
    assert len(_olefile_read(big, "Workbook", 1 << 30)) > 64 * 512  # many sectors, in runs


def test_a_damaged_sector_chain_reads_as_olefile_reads_it(tmp_path):
    """A FAT entry of the workbook's chain rewritten (a cycle, a jump off the table, an end
    before the stream's size): the bytes or the error are olefile's own."""
    import olefile

    from tests.files import xls

    src = xls(tmp_path / "src.xls", [["prompt"]] + [[f"an owl number {i}"] for i in range(2000)])
    raw = src.read_bytes()
    with olefile.OleFileIO(str(src)) as ole:
        entry = next(k for k in ole.root.kids if k.name == "Workbook")
        ss, start, whole = ole.sectorsize, entry.isectStart, ole.openstream("Workbook").read()
    fat_sector = struct.unpack_from("<I", raw, 76)[0]  # the header's first FAT sector (DIFAT[0])
    at = (fat_sector + 1) * ss + 4 * (start + 3)  # the entry after the chain's fourth sector
    for value in (start, 0x7FFFFFF0, 0xFFFFFFFE):  # back to the start, off the table, the end
        bad = tmp_path / f"bad{value}.xls"
        bad.write_bytes(raw[:at] + struct.pack("<I", value) + raw[at + 4 :])
        theirs = _olefile_read(bad, "Workbook", 1 << 30)
        assert theirs != whole  # the chain is damaged where it matters
        assert _ours(bad, "Workbook", 1 << 30) == theirs
