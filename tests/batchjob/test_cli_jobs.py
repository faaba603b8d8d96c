"""`batchjob submit|status|jobs|cancel` against the sandbox: output and exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.batchjob.conftest import TOKEN


@pytest.fixture
def run(sandbox):
    def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {
            **os.environ,
            "BATCHJOB_BASE_URL": sandbox.url,
            "BATCHJOB_BEARER_TOKEN": TOKEN,
            "BATCHJOB_RETRIES": "0",
            "LANG": "C.UTF-8",
            **env,
        }
        full = {k: v for k, v in full.items() if v != ""}
        return subprocess.run(
            [sys.executable, "-m", "batchjob.cli", *args],
            capture_output=True,
            text=True,
            env=full,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    return _run


def test_submit_watch_to_the_end(run, write, sandbox):
    p = run("submit", str(write("p.csv", "prompt\nfox\nowl [fail]\n")), "--watch", "--interval", "0.05")
    assert p.returncode == 10, p.stderr  # the job ended with some records failed
    assert "google/gemini-2.5-flash-image (default)" in p.stdout and "fast (default)" in p.stdout
    # The service's own word for the state (partially_failed, PARTIALLY_SUCCEEDED, …).
    shown = r"Partly failed( \((partially_(failed|succeeded)|(JOB_STATE_)?PARTIALLY_SUCCEEDED)\))?"
    assert re.search(shown + ", 2/2 done, 1 failed", p.stdout, re.I), p.stdout
    assert sandbox.state.submits == 1


def test_estimate_only_submits_nothing(run, write, sandbox):
    p = run(
        "submit",
        str(write("p.csv", "prompt\nfox\n")),
        "--estimate-only",
        "--model",
        "m",
        "--mode",
        "standard",
    )
    assert p.returncode == 0 and "Estimate only" in p.stdout and "0.04" in p.stdout
    assert sandbox.state.submits == 0


def test_invalid_file_is_not_uploaded(run, write, sandbox):
    files_before = len(sandbox.state.files)
    p = run("submit", str(write("p.csv", "prompt,ratio\nfox,7:7\n")))
    assert p.returncode == 1 and len(sandbox.state.files) == files_before


def test_exit_codes(run, write, sandbox):
    src = str(write("p.csv", "prompt\nfox\n"))
    assert run("jobs", BATCHJOB_BEARER_TOKEN="").returncode == 3
    assert run("jobs", BATCHJOB_BASE_URL="ftp://x").returncode == 3
    p = run("jobs", BATCHJOB_BEARER_TOKEN="wrong-token")
    assert p.returncode == 4 and "wrong-token" not in p.stderr + p.stdout
    sandbox.state.balance = 0
    before = sandbox.state.submits
    p = run("submit", src)
    assert p.returncode == 5 and "short by 0.02" in p.stderr and "Nothing was submitted" in p.stderr
    p = run("submit", src, "--estimate-only")  # an estimate that cannot run says so, exit 5
    assert p.returncode == 5 and "short by 0.02" in p.stderr and sandbox.state.submits == before
    sandbox.state.balance = 100
    assert run("status", "job_nope").returncode == 6
    sandbox.state.config.error_rate = 1.0
    assert run("jobs").returncode == 7
    sandbox.state.config.error_rate = 0.0
    sandbox.state.config.drop_submit_replies = 1
    sandbox.state.config.drop_seconds = 2
    before = sandbox.state.submits
    p = run("submit", src, BATCHJOB_READ_TIMEOUT="0.5")
    assert p.returncode == 8 and "not repeated" in p.stderr
    assert sandbox.state.submits == before + 1
    _what, so_far = p.stderr.strip().splitlines()  # what failed, then what was done so far
    assert "file_" in so_far and "sent once" in so_far


def test_a_failure_after_the_upload_says_the_file_was_uploaded(run, write, sandbox):
    """Never "nothing was changed" once the service has the file."""
    sandbox.state.config.error_rate = 0.0
    src = str(write("p.csv", "prompt\nfox\n"))
    sandbox.state.config.rate_limit_every = 2  # the upload passes; the precheck is refused
    sandbox.state.requests = 0
    p = run("submit", src)
    sandbox.state.config.rate_limit_every = 0
    assert p.returncode == 7, p.stderr
    assert re.search(r"uploaded as file_[0-9a-f]+; no job was submitted", p.stderr), p.stderr


def test_status_jobs_cancel(run, write, sandbox):
    sandbox.state.config.records_per_second = 0.01
    p = run("submit", str(write("p.csv", "prompt\nfox\nowl\n")))
    job_id = re.search(r"job_[0-9a-f]+", p.stdout).group()
    assert job_id in run("status", job_id).stdout
    assert job_id in run("jobs", "--status", "running").stdout or job_id in run("jobs").stdout
    assert re.search(r"cancell?ed", run("cancel", job_id, "--reason", "test").stdout, re.I)
    p = run("cancel", job_id)
    assert p.returncode == 6 and re.search(r"cancell?ed|not.cancellable", p.stderr, re.I), p.stderr


def test_watch_exit_codes_say_how_the_job_ended(run, write, sandbox):
    ok, bad = write("ok.csv", "prompt\nfox\n"), write("bad.csv", "prompt\nfox [fail]\n")
    assert run("submit", str(ok), "--watch", "--interval", "0.05").returncode == 0
    assert run("submit", str(bad), "--watch", "--interval", "0.05").returncode == 11


def test_json_output_for_scripts(run, write, sandbox):
    import json

    p = run("submit", str(write("p.csv", "prompt\nfox\nowl\n")), "--json", "--watch", "--interval", "0.05")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # stdout is one JSON object, nothing else
    job = out["job"]
    assert out["file_id"].startswith("file_") and out["row_count"] == 2 and out["estimate"]["estimated_cost"]
    assert (job["state"], job["terminal"], job["completed"], job["total"]) == ("completed", True, 2, 2)
    status = json.loads(run("status", job["job_id"], "--json").stdout)
    assert status["job_id"] == job["job_id"] and status["status"]  # the service's word kept too
    page = json.loads(run("jobs", "--json", "--page-size", "5").stdout)
    assert job["job_id"] in [j["job_id"] for j in page["items"]] and page["page"] == 1
    sandbox.state.config.records_per_second = 0.01
    queued = json.loads(run("submit", str(write("q.csv", "prompt\nfox\n")), "--json").stdout)["job"]
    cancelled = json.loads(run("cancel", queued["job_id"], "--json").stdout)
    assert cancelled["state"] == "cancelled" and cancelled["terminal"]
