"""Limits: checked before and while parsing, a clear error, bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import replace

import pytest

from batchjob.input import Limits, convert_file, inspect_file
from tests.files import phantom_rows_sheet, rewrite_xlsx_member, xlsx


def test_file_size_checked_before_reading(write):
    r = inspect_file(write("p.csv", "prompt\n" + "a\n" * 600), Limits(max_file_bytes=1000))
    assert r.fatal.code == "limit_file_size"
    assert r.fatal.params["limit"] == 1000


def test_rows_limit(write):
    r = inspect_file(write("p.csv", "prompt\n" + "a\n" * 101), Limits(max_rows=100))
    assert (r.fatal.code, r.fatal.params["limit"]) == ("limit_rows", 100)


def test_blank_rows_do_not_count_toward_the_rows_limit(write):
    r = inspect_file(write("p.csv", "prompt\n" + "a\n" * 100 + ",\n" * 500), Limits(max_rows=100))
    assert r.fatal is None and r.valid == 100


def test_cell_length_csv_stops_while_reading(write):
    r = inspect_file(write("p.csv", "prompt\nok\n" + "x" * 5000 + "\n"), Limits(max_cell_chars=1000))
    assert (r.fatal.code, r.fatal.params["row"]) == ("limit_cell_length", 3)


def test_cell_length_xlsx(tmp_path):
    path = xlsx(tmp_path / "p.xlsx", {"S": [["prompt"], ["ok"], ["y" * 3000]]})
    r = inspect_file(path, Limits(max_cell_chars=1000))
    assert (r.fatal.code, r.fatal.params["row"]) == ("limit_cell_length", 3)


def test_jsonl_line_length(write):
    r = inspect_file(
        write("p.jsonl", '{"prompt": "a"}\n{"prompt": "' + "z" * 3000 + '"}\n'), Limits(max_line_bytes=1000)
    )
    assert (r.fatal.code, r.fatal.params["row"]) == ("limit_line_length", 2)


def test_parse_time(write):
    r = inspect_file(write("p.csv", "prompt\n" + "a\n" * 5000), Limits(max_parse_seconds=0))
    assert r.fatal.code == "limit_parse_time"


def test_zip_bomb_ratio_refused_before_parsing(tmp_path):
    src = xlsx(tmp_path / "ok.xlsx", {"S": [["prompt"], ["a"]]})
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        zout.writestr("xl/media/padding.bin", b"\0" * (64 * 1024 * 1024))
    r = inspect_file(bomb)
    assert r.fatal.code == "limit_zip_ratio"


def test_zip_unpacked_size(tmp_path):
    src = xlsx(tmp_path / "ok.xlsx", {"S": [["prompt"], ["a"]]})
    r = inspect_file(src, Limits(max_unpacked_bytes=1000))
    assert r.fatal.code == "limit_zip_unpacked"


def test_xml_entity_bomb_is_not_expanded(tmp_path):
    src = xlsx(tmp_path / "ok.xlsx", {"S": [["prompt"], ["a"]]})
    lol = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
        )
        + ']><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="2"'
        ' uniqueCount="2"><si><t>prompt</t></si><si><t>&lol9;</t></si></sst>'
    )
    bomb = rewrite_xlsx_member(src, tmp_path / "lol.xlsx", "xl/sharedStrings.xml", lol.encode())
    r = inspect_file(bomb)
    # Either refused or read without expansion; never a billion "lol"s.
    assert r.fatal is not None or all(len(str(c)) < 1000 for c in r.columns)


@pytest.mark.skipif("ASAN_OPTIONS" in os.environ, reason="memory figures mean nothing under AddressSanitizer")
def test_million_phantom_rows_bounded_memory(tmp_path):
    src = xlsx(tmp_path / "ok.xlsx", {"Sheet1": [["prompt"], ["a cat"]]})
    path = rewrite_xlsx_member(
        src, tmp_path / "phantom.xlsx", "xl/worksheets/sheet1.xml", phantom_rows_sheet(1_000_000)
    )
    code = (
        "import resource, sys; from batchjob.input import inspect_file; "
        f"r = inspect_file({str(path)!r}); "
        "print(r.valid, r.fatal.code if r.fatal else None, "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    valid, fatal, peak_mib = out.stdout.split()
    assert (valid, fatal) == ("1", "None")
    assert int(peak_mib) < 600, f"peak RSS {peak_mib} MiB"


def test_limits_from_env(monkeypatch):
    for name in [k for k in os.environ if k.startswith("BATCHJOB_LIMIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BATCHJOB_LIMIT_MAX_ROWS", "7")
    monkeypatch.setenv("BATCHJOB_LIMIT_MAX_PARSE_SECONDS", "1.5")
    assert Limits.from_env() == replace(Limits(), max_rows=7, max_parse_seconds=1.5)
    monkeypatch.setenv("BATCHJOB_LIMIT_MAX_ROWS", "lots")
    with pytest.raises(ValueError, match="BATCHJOB_LIMIT_MAX_ROWS"):
        Limits.from_env()


def test_failed_limit_leaves_no_output(write, tmp_path):
    out = tmp_path / "o.jsonl"
    r = convert_file(write("p.csv", "prompt\n" + "a\n" * 50), out, limits=Limits(max_rows=10))
    assert r.fatal.code == "limit_rows"
    assert list(tmp_path.glob("*.jsonl")) == [] and list(tmp_path.glob(".*tmp")) == []


def test_limit_messages_with_a_row_render(write):
    """A file-level issue that names a row renders in both languages (params carry the row)."""
    r = inspect_file(write("p.csv", "prompt\nok\n" + "x" * 5000 + "\n"), Limits(max_cell_chars=1000))
    for lang in ("en", "zh"):
        assert "3" in r.to_dict(lang)["fatal"]["message"]
