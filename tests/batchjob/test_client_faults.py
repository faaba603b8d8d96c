"""Faults with httpx.MockTransport: timeouts, 5xx, 429, envelopes, lost replies."""

from __future__ import annotations

import logging

import httpx
import pytest

from batchjob.client import BatchJobClient
from batchjob.errors import AuthError, OutcomeUnknown, RateLimited, Unavailable
from batchjob.models import Job

SECRET = "s3cr3t-token-value"


def make(handler, **kw):
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    c = BatchJobClient("http://svc.test", SECRET, transport=httpx.MockTransport(handler), sleep=sleep, **kw)
    return c, slept


class Counter:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


JOB = {"job_id": "j1", "status": "running", "total": 10, "completed": 3, "failed": 1}


async def test_get_timeouts_retried_then_succeed():
    h = Counter(httpx.ReadTimeout("slow"), httpx.Response(503), httpx.Response(200, json=JOB))
    c, slept = make(h)
    job = await c.get_job("j1")
    assert job.processed == 4 and len(h.requests) == 3 and len(slept) == 2
    assert all(0 <= s <= 10 for s in slept)


async def test_get_retries_are_bounded():
    h = Counter(httpx.Response(502))
    c, _ = make(h, retries=2)
    with pytest.raises(Unavailable) as e:
        await c.get_job("j1")
    assert len(h.requests) == 3 and e.value.status == 502


async def test_backoff_grows_with_full_jitter(monkeypatch):
    import batchjob.client as mod

    monkeypatch.setattr(mod.random, "uniform", lambda a, b: b)  # the upper bound of each draw
    h = Counter(httpx.Response(500))
    c, slept = make(h, retries=4, backoff_base=0.5, backoff_cap=3.0)
    with pytest.raises(Unavailable):
        await c.get_job("j1")
    assert slept == [0.5, 1.0, 2.0, 3.0]


async def test_retry_after_honoured():
    h = Counter(httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=JOB))
    c, slept = make(h)
    await c.get_job("j1")
    assert slept == [7.0]


async def test_post_429_not_retried():
    h = Counter(httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"message": "slow down"}}))
    c, _ = make(h)
    with pytest.raises(RateLimited) as e:
        await c.precheck(5)
    assert len(h.requests) == 1 and e.value.retry_after == 3 and e.value.message == "slow down"


async def test_lost_reply_on_submit_is_outcome_unknown_and_one_post():
    h = Counter(httpx.ReadTimeout("no answer"))
    c, slept = make(h)
    with pytest.raises(OutcomeUnknown):
        await c.submit("f1")
    assert len(h.requests) == 1 and slept == []


async def test_submit_never_retried_even_when_it_never_left():
    h = Counter(httpx.ConnectError("refused"))
    c, _ = make(h)
    with pytest.raises(Unavailable):
        await c.submit("f1")
    assert len(h.requests) == 1


async def test_other_posts_retried_only_on_connect_failure(write):
    h = Counter(httpx.ConnectError("refused"), httpx.Response(200, json={"file_id": "f", "row_count": 1}))
    c, _ = make(h)
    assert (await c.upload(write("p.jsonl", b'{"prompt":"a"}\n'))).file_id == "f"
    assert len(h.requests) == 2
    h2 = Counter(httpx.RemoteProtocolError("server hung up"))
    c2, _ = make(h2)
    with pytest.raises(OutcomeUnknown):
        await c2.cancel("j1")
    assert len(h2.requests) == 1


async def test_envelope_and_unknown_fields_kept():
    body = {"success": True, "data": {"jobId": "j9", "status": "Exotic_State", "progress": 42, "shard": 3}}
    c, _ = make(lambda r: httpx.Response(200, json=body))
    job = await c.get_job("j9")
    assert job.job_id == "j9" and job.status == "Exotic_State" and job.state == "unknown"  # its own word
    assert not job.terminal
    assert job.fraction == pytest.approx(0.42) and job.model_extra["shard"] == 3


@pytest.mark.parametrize(
    ("payload", "fraction"),
    [
        ({"status": "running", "progress": 0.25}, 0.25),
        ({"status": "running", "progress": "50"}, 0.5),
        ({"status": "running", "total_records": 8, "completed_records": 2, "failed_records": 2}, 0.5),
        ({"status": "completed"}, 1.0),
        ({"status": "running"}, None),
    ],
)
def test_progress_from_number_or_counts(payload, fraction):
    assert Job.model_validate({"id": "x", **payload}).fraction == fraction


@pytest.mark.parametrize("status", ["completed", "failed", "partially_failed", "cancelled", "expired"])
def test_terminal_statuses(status):
    assert Job.model_validate({"job_id": "x", "status": status}).terminal


async def test_error_body_shapes():
    for body in ({"error": {"code": "bad_key", "message": "no"}}, {"code": "bad_key", "message": "no"}):
        c, _ = make(lambda r, b=body: httpx.Response(403, json=b))
        with pytest.raises(AuthError) as e:
            await c.list_jobs()
        assert (e.value.code, e.value.message, e.value.status) == ("bad_key", "no", 403)


async def test_token_never_in_repr_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    h = Counter(httpx.Response(500, text="boom"), httpx.ConnectError("refused"), httpx.ReadTimeout("t"))
    c, _ = make(h, retries=2)
    with pytest.raises(Unavailable) as e:
        await c.get_job("j1")
    assert SECRET not in repr(c) and SECRET not in str(e.value) and SECRET not in repr(e.value)
    assert SECRET not in caplog.text
    assert h.requests[0].headers["authorization"] == f"Bearer {SECRET}"


async def test_summary_token_only_to_same_origin():
    seen = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append((r.url.host, r.headers.get("authorization")))
        return httpx.Response(200, json={"records": []})

    c, _ = make(handler)
    await c.fetch_summary("http://svc.test/summary/1")
    await c.fetch_summary("https://files.elsewhere.test/summary/1")
    assert seen[0] == ("svc.test", f"Bearer {SECRET}")
    assert seen[1][0] == "files.elsewhere.test" and not seen[1][1]
