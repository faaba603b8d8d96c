"""`batchjob doctor` against every sandbox style, a wrong token, and a service whose answers
cannot be read: read-only, honest, with an exit code that says whether the bot can work."""

from __future__ import annotations

import re

import httpx

from batchjob import doctor
from batchjob.client import BatchJobClient
from tests.batchjob.test_cli_jobs import run  # noqa: F401 (the CLI runner fixture)


def test_doctor_reads_each_style_and_changes_nothing(run, write, sandbox):  # noqa: F811
    assert run("submit", str(write("p.csv", "prompt\nfox\n"))).returncode == 0
    files, submits = len(sandbox.state.files), sandbox.state.submits
    p = run("doctor", "--raw")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "can work with this service" in p.stdout
    assert p.stdout.count("understood:") == 3  # list, precheck, the newest job
    assert "cost=0.02 credits" in p.stdout
    assert re.search(r"-> (queued|running|completed)", p.stdout), p.stdout  # its word, and ours
    assert "answer: " in p.stdout and "not mapped" not in p.stdout  # every field of each style is read
    assert (len(sandbox.state.files), sandbox.state.submits) == (files, submits)  # read-only


def test_doctor_with_a_wrong_token_stops_at_the_first_step(run, sandbox):  # noqa: F811
    p = run("doctor", BATCHJOB_BEARER_TOKEN="wrong-token-here")
    assert p.returncode == 4 and '"list jobs" failed' in p.stdout
    assert "wrong-token-here" not in p.stdout + p.stderr and p.stdout.count("HTTP") == 1


async def test_doctor_names_what_it_could_not_read():
    answers = {
        "/v1/batch/jobs": {"weird": [1, 2], "jobz": []},  # no list of jobs anywhere
        "/v1/batch/jobs:precheck": {"estimated_cost": 0.5, "balance": 9, "colour": "blue"},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answers[request.url.path])

    async with BatchJobClient("http://svc.test", "t", transport=httpx.MockTransport(answer)) as c:
        d = await doctor.diagnose(c)
    text = doctor.render(d, "en")
    assert doctor.exit_code(d) == doctor.EXIT_UNREADABLE and not d.ok
    assert "not mapped (kept, unused): colour" in text and "no list of jobs" in text
    assert '"list jobs" failed' in text
    assert len(doctor.log_lines(d)) == 2
