"""Builders for test input files (xlsx, xls, ods, zip bombs) and the shared corpus path."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

# Beside the checkout; BJB_SHARED names it for a copy of the tests elsewhere (scripts/sanitize).
SHARED = Path(os.environ.get("BJB_SHARED") or Path(__file__).resolve().parents[2] / "shared")
CORPUS = SHARED / "corpus" / "real"


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.exists():
        pytest.skip("the shared corpus is not beside this checkout")
    return path


def xlsx(path: Path, sheets: dict[str, list[list[Any]]], merges: dict[str, list[str]] | None = None) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
        for rng in (merges or {}).get(name, []):
            ws.merge_cells(rng)
    wb.save(path)
    return path


def xls(path: Path, rows: list[list[Any]], sheet: str = "Sheet1") -> Path:
    import xlwt

    wb = xlwt.Workbook()
    ws = wb.add_sheet(sheet)
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            ws.write(r, c, v)
    wb.save(str(path))
    return path


def ods(path: Path, rows: list[list[str]]) -> Path:
    cells = "".join(
        "<table:table-row>"
        + "".join(
            f'<table:table-cell office:value-type="string"><text:p>{v}</text:p></table:table-cell>'
            for v in row
        )
        + "</table:table-row>"
        for row in rows
    )
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f'<office:body><office:spreadsheet><table:table table:name="Sheet1">{cells}'
        "</table:table></office:spreadsheet></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet")
        z.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
    return path


def rewrite_xlsx_member(src: Path, dst: Path, member: str, data: bytes) -> Path:
    """Copy an xlsx, replacing one member (to plant phantom rows or entity bombs)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, data if info.filename == member else zin.read(info))
    return dst


def phantom_rows_sheet(n: int) -> bytes:
    """Sheet XML with a header, one prompt and `n` styled but empty rows."""
    buf = io.StringIO()
    buf.write(
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f'<dimension ref="A1:B{n + 2}"/><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>prompt</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>a cat</t></is></c></row>'
    )
    for r in range(3, n + 3):
        buf.write(f'<row r="{r}"><c r="A{r}" s="0"/><c r="B{r}" s="0"/></row>')
    buf.write("</sheetData></worksheet>")
    return buf.getvalue().encode()


# --- hostile spreadsheets: small files whose grid or merges are absurd -------------------


def corner_cell_xlsx(path: Path, cell: str = "XFD1048576") -> Path:
    """A prompt at A1 and one more cell far away: a reader would build the whole range."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Prompts"
    ws["A1"] = "prompt"
    ws["A2"] = "a fox"
    ws[cell] = "x"
    wb.save(path)
    return path


def corner_cell_xls(path: Path) -> Path:
    """The same at the corner of an .xls grid (row 65536, column IV)."""
    import xlwt

    wb = xlwt.Workbook()
    ws = wb.add_sheet("Prompts")
    ws.write(0, 0, "prompt")
    ws.write(1, 0, "a fox")
    ws.write(65535, 255, "x")
    wb.save(str(path))
    return path


def overlapping_merges_xlsx(path: Path, merges: int, last_col: str = "XFD") -> Path:
    """`merges` overlapping merged ranges A3:<last_col><3+i>, a cell at <last_col>1 and one
    in the last merged row, so that a reader's grid spans every merged row."""
    src = xlsx(path.with_suffix(".base.xlsx"), {"Sheet1": [["prompt"], ["a fox"]]})
    refs = "".join(f'<mergeCell ref="A3:{last_col}{3 + i}"/>' for i in range(merges))
    sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        f'<row r="1"><c r="A1" t="inlineStr"><is><t>prompt</t></is></c>'
        f'<c r="{last_col}1" t="inlineStr"><is><t>x</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>a fox</t></is></c></row>'
        f'<row r="{merges + 2}"><c r="A{merges + 2}" t="inlineStr"><is><t>an owl</t></is></c></row>'
        f'</sheetData><mergeCells count="{merges}">{refs}</mergeCells></worksheet>'
    )
    return rewrite_xlsx_member(src, path, "xl/worksheets/sheet1.xml", sheet.encode())


def mutated_xls(path: Path, seed: int) -> Path:
    """A small .xls with a few bytes changed (tests.hostile's mutation, seeded).

    With python-calamine 0.9, seed 20 makes its reader panic (a BaseException)."""
    import random

    from tests.hostile import _mutate

    good = xls(path.with_suffix(".base.xls"), [["prompt", "ratio"], ["fox", "16:9"], ["owl", "1:1"]])
    rng = random.Random(seed)
    path.write_bytes(_mutate(good.read_bytes(), rng, rng.randrange(1, 6)))
    return path
