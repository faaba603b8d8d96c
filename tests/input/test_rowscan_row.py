"""One row, natively and in Python: the same line, the same verdict (tests/input/test_rowscan.py
compares whole files)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchjob.input import rowscan
from batchjob.input.validate import has_sd_weights, simple_line, url_part
from tests.input.test_rowscan import RATIOS, URL_SAMPLES, url_cells

pytestmark = pytest.mark.skipif(not rowscan.enabled(), reason="native row scanner not built here")


def native_taken(prompt: str, ratio: str, urls: str) -> tuple[bytes | None, bool] | None:
    """(the line, whether the row is named for the weight warning); (None, False) for a row
    refused for its ratio alone; None for a row left to Python."""
    assert rowscan._native is not None
    return rowscan._native.row_line(prompt, ratio, urls)


def native_row(prompt: str, ratio: str, urls: str) -> bytes | None:
    taken = native_taken(prompt, ratio, urls)
    return None if taken is None else taken[0]


def python_row(prompt: str, ratio: str, urls: str) -> bytes | None:
    errors: list = []
    return simple_line(1, prompt, ratio, urls, errors)


@settings(max_examples=500, deadline=None)
@given(prompt=st.text(max_size=30), ratio=RATIOS, urls=url_cells())
def test_a_row_taken_natively_is_the_row_python_writes(prompt, ratio, urls):
    for u in URL_SAMPLES:  # hosts judged, as they are after the first rows of a file
        url_part(u)
    errors: list = []
    python = simple_line(1, prompt, ratio, urls, errors)
    taken = native_taken(prompt, ratio, urls)
    if taken is not None and taken[0] is None:  # refused for its ratio alone: that one error
        assert python is None and [e.code for e in errors] == ["aspect_ratio_invalid"]
    else:
        assert taken is None or taken == (python, has_sd_weights(prompt))


def test_strings_are_escaped_as_orjson_escapes_them():
    every = "".join(chr(c) for c in range(1, 0x80)) + "\u2028\u2029é猫😀\ufeff"
    for text in (every, "x\x00y", '"', "\\", "\x7f"):
        assert native_row(text, "", "") == python_row(text, "", "")


def test_whitespace_is_what_python_strips():
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert len(spaces) > 20
    for s in spaces:
        assert native_row(f"{s}cat{s}", "", "") == python_row(f"{s}cat{s}", "", "")
        assert native_row(s, "", "") is None  # blank prompt: Python reports it
    # What Python does not strip stays: a zero-width space is not whitespace.
    assert native_row("\u200bcat", "", "") == python_row("\u200bcat", "", "")


@settings(max_examples=500, deadline=None)
@given(prompt=st.text(alphabet="(:)1.２ ab\u3000", min_size=1, max_size=14))
@example(prompt="(a:1 )")
@example(prompt="(a: 1.5\u3000)")
@example(prompt="(a:1.)")
@example(prompt="(a:.5)")
@example(prompt="(a:b:2)")
def test_weight_syntax_is_taken_and_named_exactly_when_python_warns(prompt):
    taken = native_taken(prompt, "", "")
    if not prompt.strip():
        assert taken is None  # blank prompt: Python reports it
        return
    assert taken is not None
    assert taken[0] == python_row(prompt, "", "")
    assert taken[1] is has_sd_weights(prompt)


def test_urls_are_taken_once_their_host_is_judged():
    url = "https://fresh-host.example.net/a.png"
    assert native_row("p", "", url) is None  # not judged yet: Python judges it
    url_part(url)
    assert native_row("p", "", url) == python_row("p", "", url)
    assert native_row("p", "", "http://localhost/a.png") is None


def test_ratio_spellings_are_taken_once_python_has_read_them():
    assert native_row("p", "16 x 9", "") is None
    python = python_row("p", "16 x 9", "")
    assert python is not None and native_row("p", "16 x 9", "") == python
    assert native_taken("p", "41:43", "") is None  # not read yet: Python reads it
    python_row("p", "41:43", "")
    assert native_taken("p", "41:43", "") == (None, False)  # refused, as Python refused it
    assert native_taken("", "41:43", "") is None  # more than the ratio to report: Python's
    assert native_taken("p", "41:43", "http://localhost/a.png") is None
