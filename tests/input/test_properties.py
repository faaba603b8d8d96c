"""Random input never crashes the reader and never yields a line that fails validation."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchjob.input import convert_file, inspect_file
from batchjob.input.report import FILE_CODES, ROW_CODES
from batchjob.input.validate import passes_service_check, vertex_line

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / f"in{suffix}"
        src.write_bytes(data)
        out = Path(d) / "out.jsonl"
        r = convert_file(src, out, skip_invalid=True)
        assert r.fatal is None or r.fatal.code in FILE_CODES
        assert all(e.code in ROW_CODES for e in r.errors)
        assert r.total == r.valid + r.invalid + r.skipped
        if out.exists():
            lines = out.read_bytes().splitlines()
            assert len(lines) == r.valid
            for raw in lines:
                line = orjson.loads(raw)
                assert passes_service_check(line)
                errors: list = []
                assert vertex_line(1, line, errors) is not None, errors
        else:
            assert r.valid == 0 or r.fatal is not None


@SETTINGS
@given(st.binary(max_size=2000), st.sampled_from([".csv", ".xlsx", ".jsonl", ".xls"]))
def test_random_bytes(data, suffix):
    _check(data, suffix)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_behind_magic(tail):
    for magic in (b"PK\x03\x04", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"{", b"\xef\xbb\xbf"):
        _check(magic + tail, ".bin")


cell = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "16:9",
            "16x9",
            "7:7",
            "https://a.com/x.png",
            "http://127.0.0.1/x",
            '["https://b.org/y.jpg"]',
            "",
            " ",
            "一只猫",
            "=1+1",
        ]
    ),
)


@SETTINGS
@given(
    st.lists(st.lists(cell, min_size=1, max_size=4), max_size=20),
    st.sampled_from([",", "\t", ";"]),
    st.sampled_from(["utf-8", "utf-8-sig", "gb18030", "utf-16"]),
)
def test_random_csv(rows, sep, encoding):
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep)
    w.writerow(
        ["prompt", "aspect_ratio", "image_urls", "x"][: max(1, max((len(r) for r in rows), default=1))]
    )
    w.writerows(rows)
    try:
        data = buf.getvalue().encode(encoding)
    except UnicodeEncodeError:
        return
    _check(data, ".csv")


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
line_obj = st.one_of(
    st.fixed_dictionaries(
        {"prompt": json_value}, optional={"aspect_ratio": json_value, "image_urls": json_value}
    ),
    st.fixed_dictionaries({"contents": json_value}, optional={"generationConfig": json_value}),
    st.fixed_dictionaries({"request": json_value}),
    st.dictionaries(st.text(max_size=10), json_value, max_size=4),
    json_value,
)


@SETTINGS
@given(st.lists(line_obj, max_size=15))
def test_random_jsonl(objs):
    data = "\n".join(json.dumps(o) for o in objs).encode()
    _check(data, ".jsonl")


def test_inspect_never_raises_on_directory(tmp_path):
    r = inspect_file(tmp_path)
    assert r.fatal is not None
