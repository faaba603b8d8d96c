"""A report's wire form (how the parse worker hands it over): compact, and decoded as it was."""

from __future__ import annotations

import gc

import orjson
import pytest

from batchjob.input import pipeline
from batchjob.input.report import Issue, Report
from batchjob.input.validate import ALLOWED_RATIOS


def test_a_list_many_issues_share_crosses_the_wire_once(tmp_path):
    """The allowed ratios every invalid ratio names: once on the wire, the same after."""
    src = tmp_path / "ratios.csv"
    rows = "".join(f"fox {i},7:{i % 9 + 1},\n" for i in range(300))
    src.write_text("prompt,aspect_ratio,image_urls\n" + rows)
    report = pipeline.inspect_file(src)
    wire = orjson.dumps(report.to_wire())
    assert wire.count(b'"21:9"') == 1  # 300 errors, one list
    back = Report.from_wire(orjson.loads(wire))
    assert back.to_dict("en") == report.to_dict("en") and len(back.errors) == 300
    assert back.errors[0].params["allowed"] == back.errors[299].params["allowed"] == ALLOWED_RATIOS
    # Lists that differ from issue to issue go with each issue.
    odd = Report(path="x", errors=[Issue("c", 1, None, {"l": [1]}), Issue("c", 2, None, {"l": [2], "n": 3})])
    assert Report.from_wire(orjson.loads(orjson.dumps(odd.to_wire()))).errors == odd.errors


def test_a_report_decoded_leaves_the_collector_as_it_was():
    wire = Report(path="x", errors=[Issue("c", 1)]).to_wire()
    try:
        for enabled in (True, False, True):
            gc.enable() if enabled else gc.disable()
            assert Report.from_wire(wire).errors == [Issue("c", 1)]
            assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_issues_cross_as_runs_in_their_order():
    """Consecutive issues of one kind (code, column, param names) go as one run of rows and
    values; a change of kind starts another, so the order is kept whatever the mix."""
    errors = [
        Issue("aspect_ratio_invalid", 2, "ratio", {"value": "7:5", "allowed": ["1:1"]}),
        Issue("aspect_ratio_invalid", 3, "ratio", {"value": "x", "allowed": ["1:1"]}),
        Issue("prompt_empty", 4, "prompt", {}),
        Issue("aspect_ratio_invalid", 5, "ratio", {"value": "7:5", "allowed": ["1:1"]}),
        Issue("aspect_ratio_invalid", 6, "ratio2", {"value": "7:5", "allowed": ["1:1"]}),
        Issue("image_url_invalid", None, None, {"url": "ftp://x", "n": 1}),
        Issue("image_url_invalid", 8, None, {"n": 2, "url": "ftp://y"}),  # same names, other order
    ]
    report = Report(path="x", errors=errors)
    wire = report.to_wire()
    assert [(run[0], run[3]) for run in wire["errors"]] == [
        ("aspect_ratio_invalid", [2, 3]),
        ("prompt_empty", [4]),
        ("aspect_ratio_invalid", [5]),
        ("aspect_ratio_invalid", [6]),
        ("image_url_invalid", [None, 8]),
    ]
    assert wire["errors"][0][4] == [["7:5", "x"], {"=": ["1:1"]}]  # one value for the whole run
    assert Report.from_wire(orjson.loads(orjson.dumps(wire))).errors == errors
    # Equal is not the same: 1, True and 1.0 each come back as they were.
    mixed = [Issue("c", r, None, {"n": v}) for r, v in enumerate((1, True, 1.0))]
    back = Report.from_wire(orjson.loads(orjson.dumps(Report(path="x", errors=mixed).to_wire())))
    assert [type(e.params["n"]) for e in back.errors] == [int, bool, float]


def test_a_run_in_a_shape_no_report_has_is_refused():
    """The reading child wrote it, and a taken-over child may write anything: the decoder
    raises what `isolation` turns into an unreadable file, nothing else."""
    good = Report(path="x", errors=[Issue("c", 1, None, {"a": 1, "b": 2})]).to_wire()
    for runs in (
        [["c", None, ["a", "b"], [1], [[1]]]],  # a value list short
        [["c", None, ["a", "b"], [1], [{"no": 1}, [2]]]],
        [["c", None, ["a"], 7, [[1]]]],
        [["c", None, ["a", "b", "c"], [1], [[1], [2]]]],
        ["c"],
    ):
        with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
            Report.from_wire({**good, "errors": runs})
