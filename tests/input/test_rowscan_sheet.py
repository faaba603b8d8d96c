"""Spreadsheet rows (lists of typed cells), natively and in Python: the same report and lines
(tests/input/test_rowscan.py compares CSV files)."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchjob.input import rowscan
from batchjob.input.limits import InputError, Limits
from batchjob.input.pipeline import _Clock, _table
from batchjob.input.report import Report
from batchjob.input.validate import url_part
from tests.input.test_rowscan import PROMPTS, RATIOS, SETTINGS, small_reads, tables, url_cells

pytestmark = pytest.mark.skipif(not rowscan.enabled(), reason="native row scanner not built here")


TIMES = st.sampled_from([dt.time(16, 9), dt.time(1, 1), dt.time(21, 9, 30), dt.time(7, 5), dt.time(0, 0)])
CELLS = st.one_of(
    PROMPTS,
    RATIOS,
    url_cells(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.integers(-5, 5),
    st.integers(),
    st.sampled_from([0.30000000000000004, 1e300, 10**30, 123456789012345]),  # long as text
    st.booleans(),
    TIMES,
    st.just(dt.datetime(2024, 5, 1, 8, 30)),
    st.just(dt.datetime(1899, 12, 30, 16, 9)),
    st.just(dt.date(2024, 5, 1)),
    st.just(dt.timedelta(hours=16, minutes=9)),
    st.just(Decimal("1.5")),
    st.text(max_size=6),
)


def run_table(rows: list[list[Any]], native: bool, limits: Limits) -> tuple[Any, ...]:
    report = Report(path="sheet.xlsx")
    out: list[bytes] = []
    it = iter([list(r) for r in rows])
    try:
        if native:
            scan = rowscan.SheetRows(it, limits.max_cell_chars)
            _table(1, iter(scan), report, limits, _Clock(limits), out.append, typed=True, on_header=scan.use)
        else:
            _table(1, it, report, limits, _Clock(limits), out.append, typed=True)
        fatal = None
    except InputError as e:
        fatal = (e.code, e.params)
    return fatal, report.to_dict(), b"".join(out)


SHEET = tables(
    {
        "prompt": st.one_of(PROMPTS, st.sampled_from(["cat", "猫 (cute)"]), CELLS),
        "ratio": st.one_of(RATIOS, TIMES, CELLS),
        "urls": st.one_of(url_cells(), CELLS),
    },
    CELLS,
)


@SETTINGS
@given(
    t=SHEET,
    batch=st.sampled_from([1, 2, 8192]),
    max_rows=st.sampled_from([3, 1000]),
    max_cell=st.sampled_from([12, 32_767]),
)
def test_sheet_rows_give_the_same_result(t, batch, max_rows, max_cell):
    header, rows = t
    limits = Limits(max_rows=max_rows, max_cell_chars=max_cell)
    with small_reads(1 << 20, batch):
        native = run_table([header, *rows], True, limits)
    python = run_table([header, *rows], False, limits)
    assert native == python


def test_typical_sheet_rows_are_read_natively(monkeypatch):
    # A numbered sheet whose ratio column Excel typed as times: still read natively.
    from batchjob.input import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "simple_line", lambda *a, **k: calls.append(a))
    url_part("https://cdn.example.com/ref/0.png")
    rows: list[list[Any]] = [["序号", "提示词", "比例", "参考图", "备注"]]
    for i in range(500):
        ratio = [dt.time(16, 9), "1:1", ""][i % 3]
        urls = "https://cdn.example.com/ref/0.png" if i % 2 else ""
        rows.append([float(i), f"一只猫 {i}", ratio, urls, None if i % 4 else True])
    fatal, report, out = run_table(rows, True, Limits())
    assert (fatal, report["rows"]["valid"], calls) == (None, 500, [])
    assert out.count(b'"aspectRatio":"16:9"') == 167


def test_a_host_first_met_in_the_sheet_is_judged_once(monkeypatch):
    from batchjob.input import pipeline

    host = f"sheet-{os.getpid()}-{id(monkeypatch)}.example.net"  # judged nowhere before
    real = pipeline.simple_line
    calls = []
    monkeypatch.setattr(pipeline, "simple_line", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rows: list[list[Any]] = [["prompt", "image_urls"]]
    rows += [[f"一只猫 {i}", f"https://{host}/{i}.png"] for i in range(500)]
    fatal, report, _ = run_table(rows, True, Limits())
    assert (fatal, report["rows"]["valid"], calls) == (None, 500, [2])
    monkeypatch.setattr(pipeline, "simple_line", real)
    assert run_table(rows, True, Limits()) == run_table(rows, False, Limits())


def test_a_number_longer_than_the_cell_limit_is_refused_alike():
    limits = Limits(max_cell_chars=12)
    rows: list[list[Any]] = [["prompt", "n"], ["cat", 1.5], ["dog", 0.30000000000000004]]
    native = run_table(rows, True, limits)
    assert native == run_table(rows, False, limits)
    assert native[0] == ("limit_cell_length", {"row": 3, "limit": 12})
