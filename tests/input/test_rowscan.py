"""The native row scanner gives exactly what reading every row in Python gives.

Each file is converted twice, natively and with BATCHJOB_NATIVE=0, and the reports and
outputs compared byte for byte: generated files full of the awkward cases (quotes, line
ends of every kind, Unicode whitespace, weight syntax, ratio spellings, URL forms, blank
rows, invalid rows), read in chunks as small as one byte so that every record boundary
falls across a chunk's end somewhere.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchjob.input import convert_file, inspect_file, rowscan
from batchjob.input.limits import Limits
from batchjob.input.report import WARNINGS_KEPT_PER_CODE
from batchjob.input.validate import url_part

pytestmark = pytest.mark.skipif(not rowscan.enabled(), reason="native row scanner not built here")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_scanner_is_built_where_a_compiler_is() -> None:
    # CI machines have a C compiler: an install that silently fell back would pass every
    # other test here and only be slow.
    if not os.environ.get("CI"):
        pytest.skip("checked on CI")
    assert rowscan._native is not None


def test_a_scanner_built_from_other_sources_is_not_used() -> None:
    import types

    assert rowscan.usable(rowscan._native)
    stale = types.SimpleNamespace(PROTOCOL=rowscan.PROTOCOL - 1)
    assert not rowscan.usable(stale) and not rowscan.usable(types.SimpleNamespace())


@contextlib.contextmanager
def python_only() -> Iterator[None]:
    old = os.environ.get("BATCHJOB_NATIVE")
    os.environ["BATCHJOB_NATIVE"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["BATCHJOB_NATIVE"]
        else:
            os.environ["BATCHJOB_NATIVE"] = old


@contextlib.contextmanager
def small_reads(chunk: int, batch: int) -> Iterator[None]:
    saved = rowscan.CHUNK, rowscan.BATCH
    rowscan.CHUNK, rowscan.BATCH = chunk, batch
    try:
        yield
    finally:
        rowscan.CHUNK, rowscan.BATCH = saved


def outcome(path: Path, limits: Limits | None = None) -> tuple[Any, ...]:
    out = path.with_suffix(".out")
    report = convert_file(path, out, skip_invalid=True, limits=limits)
    data = out.read_bytes() if out.exists() else None
    out.unlink(missing_ok=True)
    looked = inspect_file(path, limits=limits).to_dict()
    return report.to_dict(), data, looked


def assert_same(path: Path, chunk: int = 1 << 20, batch: int = 8192, limits: Limits | None = None) -> Any:
    with small_reads(chunk, batch):
        native = outcome(path, limits)
    with python_only():
        python = outcome(path, limits)
    assert native[0] == python[0]
    assert native[1] == python[1]
    assert native[2] == python[2]
    return native


# --- generated files ----------------------------------------------------------------------

PROMPTS = st.sampled_from(
    [
        "a watercolor fox",
        "一只可爱的橘猫, 水墨山水画",
        "  padded  ",
        "\u3000全角空格\u3000",
        "\xa0nbsp\u2028",
        "",
        " ",
        "\u3000",
        "cat (cute)",
        "(masterpiece:1.2), cat",
        "(x:１２)",
        "(x: 1.)",
        "(a(b:1))",
        "a:1)",
        'say "hi"',
        "tab\there",
        "line\nbreak",
        "cr\rlf\r\n",
        "ctl\x01\x1f\x7f",
        "nul\x00",
        "\x1c\x1d\x1e\x1f",
        "back\\slash /",
        "emoji 😀",
        "\ufeffbom",
        "a,b;c",
    ]
)
RATIOS = st.sampled_from(
    ["", "16:9", "1:1", "9:16", "21:9", "16：9", "16x9", " 4:3 ", "16:09", "7:5", " ", "x", "abc", "16:9\n"]
)
URL_SAMPLES = [
    "https://cdn.example.com/ref/1.png",
    "http://cdn.example.com/a.JPG?x=1#y",
    "HTTPS://Cdn.Example.com:8443/p/q.webp",
    "https://cdn.example.com",
    "https://img.example.org/x.heic?size=2.png",
    "https://img.example.org/noext",
    "https://img.example.org/a.b/c",
    "https://例子.com/a.png",
    "https://cdn.example.com/é.png",
    "https://cdn.example.com/x.pnG",
    "http://localhost/a.png",
    "http://10.0.0.1/a.png",
    "http://[::1]/a.png",
    "https://user@cdn.example.com/a.png",
    "https://cdn.example.com:0/a.png",
    "https://cdn.example.com:99999/a.png",
    "https://cdn.example.com:/a.png",
    "ftp://cdn.example.com/a.png",
    "httpſ://cdn.example.com/a.png",
    "https://cdn.example.com/ctl\x01.png",
    "not a url",
    '["https://cdn.example.com/j.png"]',
]
URLS = st.sampled_from(URL_SAMPLES)
SEPS = st.sampled_from([", ", ",", "，", ";", "；", "、", " ", "\n", "\u3000", "\t"])


@st.composite
def url_cells(draw: st.DrawFn) -> str:
    urls = draw(st.lists(URLS, max_size=3))
    out = ""
    for u in urls:
        out += u + draw(SEPS)
    return out if draw(st.booleans()) else out.rstrip(", ，;；、\n\u3000\t")


HEADERS = [
    ["prompt", "aspect_ratio", "image_urls"],
    ["提示词", "比例"],
    ["id", "Prompt", "参考图", "ratio", "note"],
    ["image_urls", "prompt"],
]


FIELD_OF = {
    "prompt": "prompt",
    "提示词": "prompt",
    "aspect_ratio": "ratio",
    "比例": "ratio",
    "ratio": "ratio",
    "image_urls": "urls",
    "参考图": "urls",
}


@st.composite
def tables(
    draw: st.DrawFn,
    cells: dict[str, st.SearchStrategy[Any]],
    other: st.SearchStrategy[Any],
) -> tuple[list[str], list[list[Any]]]:
    """A header and rows: mostly rows made of field values, and blank, short, wide and free ones."""
    header = draw(st.sampled_from(HEADERS))
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["common", "common", "common", "blank", "short", "wide", "free"]))
        if kind == "blank":
            rows.append(draw(st.sampled_from([[], [""], ["", " "], ["\u3000", "\t"]])))
            continue
        if kind == "free":
            rows.append(draw(st.lists(other, max_size=5)))
            continue
        row = [draw(cells[FIELD_OF[n.lower()]]) if n.lower() in FIELD_OF else draw(other) for n in header]
        if kind == "short":
            row = row[: draw(st.integers(0, len(row)))]
        if kind == "wide":
            row += draw(st.lists(other, min_size=1, max_size=3))
        rows.append(row)
    return header, rows


def table() -> st.SearchStrategy[tuple[list[str], list[list[Any]]]]:
    return tables({"prompt": PROMPTS, "ratio": RATIOS, "urls": url_cells()}, st.sampled_from(["", "x", "7"]))


def render(header: list[str], rows: list[list[str]], delimiter: str, line_end: str, quoting: int) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator=line_end, quoting=quoting)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@SETTINGS
@given(
    t=table(),
    delimiter=st.sampled_from([",", "\t", ";"]),
    line_end=st.sampled_from(["\n", "\r\n", "\r"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
    trailing=st.sampled_from(["", "\n", "\n\n", "\r\n \r\n"]),
    chunk=st.sampled_from([1, 2, 3, 7, 64, 1 << 20]),
    batch=st.sampled_from([1, 2, 8192]),
)
def test_written_tables_give_the_same_result(
    t, delimiter, line_end, quoting, encoding, trailing, chunk, batch
):
    header, rows = t
    text = render(header, rows, delimiter, line_end, quoting)
    if not text.endswith(("\n", "\r")):
        trailing = ""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.csv"
        path.write_bytes((text + trailing).encode(encoding))
        assert_same(path, chunk, batch)


FRAGMENTS = st.sampled_from(
    [
        '"',
        '""',
        ",",
        "\n",
        "\r",
        "\r\n",
        " ",
        "a",
        "猫",
        "prompt",
        "https://cdn.example.com/x.png",
        "16:9",
        "\x00",
    ]
)


@SETTINGS
@given(
    body=st.lists(FRAGMENTS, max_size=40).map("".join),
    header=st.sampled_from(["prompt,aspect_ratio,image_urls\n", "prompt\r\n", '"prompt","image_urls"\r']),
    chunk=st.sampled_from([1, 2, 5, 1 << 20]),
)
def test_hand_made_csv_gives_the_same_result(body, header, chunk):
    # Quotes in odd places, unterminated quotes, text after a closing quote, NUL bytes.
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.csv"
        path.write_bytes((header + body).encode())
        assert_same(path, chunk, 2)


def test_common_rows_are_read_natively(tmp_path, monkeypatch):
    # Nothing of the fast path may quietly stop working: a file of ordinary rows is read
    # without a single row going through the Python row check.
    from batchjob.input import pipeline

    calls = []
    monkeypatch.setattr(pipeline, "simple_line", lambda *a, **k: calls.append(a))
    url_part("https://cdn.example.com/ref/0.png")  # hosts are judged by Python once, then cached
    lines = ["prompt,aspect_ratio,image_urls"]
    for i in range(3000):
        urls = ", ".join(f"https://cdn.example.com/ref/{i}-{j}.png" for j in range(i % 3))
        weights = "(masterpiece:1.2) " if i % 5 == 0 else ""  # warned about, and common
        lines.append(f'"{weights}一只可爱的橘猫, cat (cute) {i}",{["", "16:9", "1:1"][i % 3]},"{urls}"')
    path = tmp_path / "common.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = convert_file(path, tmp_path / "o.jsonl")
    assert (r.valid, r.invalid, calls) == (3000, 0, [])
    assert r.warning_counts == {"sd_weight_syntax": 600}
    assert [w.row for w in r.warnings[:3]] == [2, 7, 12]


def test_a_host_and_a_ratio_first_met_in_the_file_are_judged_once(tmp_path, monkeypatch):
    """In a process that has judged nothing yet (a reader forked for each file), Python
    judges the first row naming a new host or ratio spelling, and the scan reads the rest
    with its verdict: not every such row of the first batch left to Python."""
    from batchjob.input import pipeline

    host = f"cold-{os.getpid()}-{id(tmp_path)}.example.net"  # judged nowhere before
    ratio = f"{os.getpid() % 89 + 7} : {id(tmp_path) % 97 + 101}"  # a spelling none read
    lines = ["prompt,aspect_ratio,image_urls"]
    for i in range(3000):
        lines.append(f"cat {i},{ratio if i % 2 else '16:9'},https://{host}/{i}.png")
    path = tmp_path / "cold.csv"
    path.write_text("\n".join(lines) + "\n")
    real = pipeline.simple_line
    calls = []
    monkeypatch.setattr(pipeline, "simple_line", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    r = convert_file(path, tmp_path / "o.jsonl", skip_invalid=True)
    assert (r.valid, r.invalid) == (1500, 1500)
    assert calls == [2, 3]  # the host's first row, then the ratio's
    monkeypatch.setattr(pipeline, "simple_line", real)
    assert_same(path, 1 << 20, 8192)


def test_rows_refused_for_their_ratio_alone_are_read_natively(tmp_path, monkeypatch):
    """Every other row with a ratio the service does not take: after the first, which
    Python reads, the scan goes on through them, with the same errors and line rows."""
    from batchjob.input import pipeline

    lines = ["prompt,aspect_ratio,image_urls"]
    for i in range(2000):
        urls = "https://cdn.example.com/ref/0.png" if i % 3 == 0 else ""
        lines.append(f"cat {i},{'7:5' if i % 2 else '16:9'},{urls}")
    path = tmp_path / "refused.csv"
    path.write_text("\n".join(lines) + "\n")
    native = assert_same(path, 4096, 64)[0]
    assert native["rows"]["invalid"] == 1000 and len(native["errors"]) == 1000
    assert native["errors"][-1]["row"] == 2001 and native["errors"][-1]["code"] == "aspect_ratio_invalid"
    real = pipeline.simple_line
    calls = []
    monkeypatch.setattr(pipeline, "simple_line", lambda *a, **k: calls.append(a) or real(*a, **k))
    r = convert_file(path, tmp_path / "o.jsonl", skip_invalid=True)
    assert (r.valid, r.invalid, len(calls)) == (1000, 1000, 0)  # the ratio and host are known now


def test_a_record_longer_than_the_cell_limit_is_refused_alike(tmp_path, monkeypatch):
    monkeypatch.setattr(rowscan, "_LONG_RECORD", 1000)
    limits = Limits(max_cell_chars=5000)
    path = tmp_path / "long.csv"
    path.write_text('prompt\nok\n"' + "x" * 20_000 + '"\nafter\n')
    native = assert_same(path, 512, 8192, limits)
    assert native[0]["fatal"]["code"] == "limit_cell_length"
    # An unterminated quote swallows the rest of the file, however long.
    path.write_text('prompt\nok\n"' + "y\n" * 3000)
    assert_same(path, 512, 8192)


def test_weight_warnings_name_the_same_rows_and_count_alike(tmp_path):
    """Weight rows read natively are named in their stretch: more of them than a report
    keeps, between blank rows and rows left to Python, give the same warnings."""
    lines = []
    for i in range(700):
        lines.append(f"(masterpiece:1.{i % 9}) cat {i},16:9" if i % 3 else f"plain {i},16:9")
        if i % 50 == 0:
            lines.append(",")  # blank: a stretch's blank rows come first
        if i % 77 == 0:
            lines.append("(bad:2) ratio,7:5")  # invalid: Python's checks, and no warning
    path = tmp_path / "weights.csv"
    path.write_text("prompt,aspect_ratio\n" + "\n".join(lines) + "\n")
    native = assert_same(path, 4096, 64)
    report = native[0]
    assert report["warning_counts"] == {"sd_weight_syntax": 466}
    assert len(report["warnings"]) == WARNINGS_KEPT_PER_CODE
    # Row 1 the header, then "plain 0", the blank row, the invalid row: row 5 warns first.
    assert report["warnings"][0]["row"] == 5


def test_row_limit_counts_the_same(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("prompt\n" + "a\n\n" * 50 + "b\n")
    native = assert_same(path, 16, 3, Limits(max_rows=50))
    assert native[0]["fatal"]["code"] == "limit_rows"


def test_a_decoding_error_late_in_the_file_restarts_with_the_next_encoding(tmp_path):
    path = tmp_path / "late.csv"
    body = "prompt\n" + "一只猫\n" * 5000
    path.write_bytes(body.encode("utf-8") + "中文".encode("gb18030") + b"\n")  # not UTF-8
    native = assert_same(path, 4096)
    assert native[0]["encoding"] != "utf-8"


def test_a_cell_over_the_limit_before_a_bad_byte_is_refused_alike(tmp_path):
    """The first problem in file order is the one reported, on both paths, wherever the
    bad byte falls in a read block (it once gave encoding_unknown natively)."""
    path = tmp_path / "cell-then-byte.csv"
    head = b"prompt\n" + b"a watercolor fox, misty dawn\n" * 45_000  # past the 1 MiB sniffed head
    for gap in (0, 100, 5000, 70_000):
        path.write_bytes(head + b"x" * 40_000 + b"\n" + b"y" * gap + b"\xff\xfe\xfa\n")
        for chunk in (1 << 20, 8192, 4096):
            native = assert_same(path, chunk)
            assert native[0]["fatal"]["code"] == "limit_cell_length", (gap, chunk, native[0]["fatal"])


@settings(max_examples=150, deadline=None)
@given(
    cut=st.integers(0, 60_000),
    bad=st.sampled_from([b"\xff", b"\x80", b"\xe4\xb8", b"\x00\x00"]),
    chunk=st.sampled_from([4096, 8192, 1 << 20]),
)
def test_a_bad_byte_anywhere_fails_alike(cut, bad, chunk):
    from batchjob.input import detect

    lines = "".join(f"prompt {i} 一只猫 (cute)\n" for i in range(2500)).encode()
    data = b"prompt,aspect_ratio\n" + lines[:cut] + bad + lines[cut:]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bad.csv"
        path.write_bytes(data)
        saved, detect._CHUNK = detect._CHUNK, 256  # sniff a short head: the parse meets the byte
        try:
            assert_same(path, chunk, 512, Limits(max_cell_chars=20_000))
        finally:
            detect._CHUNK = saved


def test_a_long_line_is_searched_for_its_end_once(tmp_path, monkeypatch):
    """A 6 MB line without an end (a 50 MB one took 14.6 s, searching from its start again
    after every 1 MiB read): the bytes searched stay within twice the file."""
    searched = [0]
    real = rowscan._last_eol

    def counting(buf, start, end):
        searched[0] += end - start
        return real(buf, start, end)

    monkeypatch.setattr(rowscan, "_last_eol", counting)
    path = tmp_path / "one-line.csv"
    path.write_bytes(b"prompt," + b"x" * (6 << 20))
    r = convert_file(path, tmp_path / "o.jsonl")
    assert r.fatal is not None and r.fatal.code in ("limit_cell_length", "no_prompt_column")
    assert searched[0] <= 2 * path.stat().st_size, searched[0]


@pytest.mark.parametrize("chunk", [1 << 20, 7])
def test_each_line_sent_knows_its_row_in_the_users_file(tmp_path, chunk):
    # Blank rows between taken ones, an invalid row, trailing blanks: the runs name exactly
    # the rows whose lines were written, on the native and the Python path alike.
    body = "prompt,aspect_ratio\na,\n , \n\nb,7:7\nc,\nd,16:9\n,\ne,\n\n"
    path = tmp_path / "gaps.csv"
    path.write_text(body, encoding="utf-8")
    report, data, _ = assert_same(path, chunk=chunk)
    assert report["line_rows"] == [[2, 1], [6, 2], [9, 1]]
    assert data.count(b"\n") == 4  # a, c, d, e
