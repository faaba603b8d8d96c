"""A report's wire form (how the parse worker hands it over): compact, and decoded as it was."""

from __future__ import annotations

import gc

import orjson

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
