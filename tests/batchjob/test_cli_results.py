"""`batchjob results JOB_ID -o DIR` against the sandbox: images, manifest, resume, refusals."""

from __future__ import annotations

import csv
import json
import re

from tests.batchjob.test_cli_jobs import run  # noqa: F401  (the fixture)


def _finished_job(run, write) -> str:  # noqa: F811
    p = run(
        "submit",
        str(write("p.csv", "prompt,aspect_ratio\nfox,16:9\nowl [fail],1:1\n=cmd,9:16\n")),
        "--watch",
        "--interval",
        "0.05",
    )
    assert p.returncode == 10, p.stderr
    return re.search(r"job_[0-9a-f]+", p.stdout).group()


def test_results_images_and_manifest_then_resume(run, write, tmp_path):  # noqa: F811
    job_id = _finished_job(run, write)
    out = tmp_path / "out"
    p = run("results", job_id, "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "3 records, 2 images" in p.stderr
    assert sorted(x.name for x in (out / "images").iterdir()) == ["1-1.png", "3-1.png"]
    with (out / "manifest.csv").open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert [(r["record"], r["status"]) for r in rows] == [
        ("1", "succeeded"),
        ("2", "failed"),
        ("3", "succeeded"),
    ]
    assert rows[1]["error"] and rows[2]["prompt"] == "'=cmd"  # a formula stays text
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert lines[0]["images"] == ["1-1.png"] and lines[1]["images"] == []
    before = (out / "images" / "1-1.png").stat().st_mtime_ns
    assert run("results", job_id, "-o", str(out)).returncode == 0  # resumed: kept, not rewritten
    assert (out / "images" / "1-1.png").stat().st_mtime_ns == before
    assert not [x for x in out.rglob("*") if x.name.startswith(".")]  # no half files left
    p = run("results", job_id, "-o", str(tmp_path / "f"), "--failed-only", "--json")
    assert p.returncode == 0 and [json.loads(x)["record"] for x in p.stdout.splitlines()] == [2]


def test_results_of_an_unknown_or_unfinished_job_are_refused(run, write, tmp_path, sandbox):  # noqa: F811
    p = run("results", "job_doesnotexist", "-o", str(tmp_path / "x"))
    assert p.returncode == 6 and "not found" in p.stderr.lower()
    sandbox.state.config.records_per_second = 0.01
    p = run("submit", str(write("p.csv", "prompt\nfox\n")))
    job_id = re.search(r"job_[0-9a-f]+", p.stdout).group()
    p = run("results", job_id, "-o", str(tmp_path / "y"), LANG="zh_CN.UTF-8")
    assert p.returncode == 6 and "尚未结束" in p.stderr
