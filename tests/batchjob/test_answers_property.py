"""Whatever the service answers, every endpoint of the client returns a typed result or
raises BatchJobError: never a pydantic ValidationError, KeyError, TypeError, AttributeError,
RecursionError or anything else. Hypothesis generates the answers: plausible shapes with
wrong types, missing fields, nulls, huge numbers, deep nesting, envelopes, any status."""

from __future__ import annotations

import asyncio
import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchjob.client import BatchJobClient
from batchjob.errors import BatchJobError
from batchjob.models import Estimate, Job, JobPage, UploadResult

KEYS = [
    "data", "code", "message", "success", "error", "errors", "detail", "status", "state", "id", "job_id",
    "jobId", "name", "file_id", "fileId", "row_count", "records", "estimated_cost", "cost", "balance",
    "current_balance", "required", "shortfall", "amount", "value", "unit", "currency", "current",
    "progress", "total", "completed", "succeeded", "failed", "pending", "request_counts", "batchStats",
    "items", "jobs", "list", "results", "has_more", "next_page", "created_at", "createTime",
    "output_summary_url", "sufficient", "recharge_url", "error_code", "request_id",
]  # fmt: skip
WORDS = ["SUCCEEDED", "JOB_STATE_RUNNING", "cancelling", "done", "45%", "1,234.5", "", "nan", "1e400", "-3"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(WORDS),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=6),
    ),
    max_leaves=30,
)
bodies = st.one_of(
    values,
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8),
    st.builds(
        lambda d, code: {"code": code, "message": "x", "data": d},
        values,
        st.sampled_from([0, 1, 40201, "OK"]),
    ),
)
statuses = st.sampled_from([200, 200, 200, 201, 400, 401, 402, 404, 409, 422, 429, 500, 503])
raw_bodies = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),
    st.sampled_from([b"", b"not json", b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"[[[[[[[["]),
    st.just(b"[" * 5000 + b"]" * 5000),  # deeper than any parser wants
)

ENDPOINTS = ("upload", "precheck", "submit", "get_job", "list_jobs", "cancel")


async def call(endpoint: str, status: int, raw: bytes, tmp_file) -> object:
    transport = httpx.MockTransport(lambda r: httpx.Response(status, content=raw))
    async with BatchJobClient("http://svc.test", "t", transport=transport, retries=0) as c:
        if endpoint == "upload":
            return await c.upload(tmp_file)
        if endpoint == "precheck":
            return await c.precheck(3)
        if endpoint == "submit":
            return await c.submit("file_1")
        if endpoint == "get_job":
            return await c.get_job("job_1")
        if endpoint == "list_jobs":
            return await c.list_jobs()
        return await c.cancel("job_1")


RESULT = {
    "upload": UploadResult,
    "precheck": Estimate,
    "submit": Job,
    "get_job": Job,
    "list_jobs": JobPage,
    "cancel": Job,
}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(endpoint=st.sampled_from(ENDPOINTS), status=statuses, raw=raw_bodies)
def test_any_answer_is_a_result_or_a_batchjob_error(endpoint, status, raw, tmp_path_factory):
    tmp_file = tmp_path_factory.getbasetemp() / "answer-property.jsonl"
    tmp_file.write_text('{"prompt": "a"}\n')
    try:
        result = asyncio.run(call(endpoint, status, raw, tmp_file))
    except BatchJobError:
        return
    assert isinstance(result, RESULT[endpoint])
    if isinstance(result, Job):  # what the bot reads of a job never fails either
        _ = (result.terminal, result.fraction, result.processed, result.state, result.created_ms)
