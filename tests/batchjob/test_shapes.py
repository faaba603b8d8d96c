"""Answers in the shapes other services use, read into the same typed results."""

from __future__ import annotations

import httpx
import pytest

from batchjob.client import BatchJobClient
from batchjob.errors import AuthError, BadAnswer, InsufficientBalance, NotFound, OutcomeUnknown, RateLimited
from batchjob.errors import ValidationError as Rejected
from batchjob.models import Estimate, Job, JobPage, UploadResult


@pytest.mark.parametrize(
    ("body", "cost", "balance", "currency"),
    [
        ({"estimated_cost": 1.2, "balance": 10}, 1.2, 10.0, None),
        ({"estimatedCost": "1.2", "currentBalance": "1,000.5"}, 1.2, 1000.5, None),
        (
            {"cost": {"amount": 1.2, "unit": "credits"}, "balance": {"value": 3, "currency": "USD"}},
            1.2,
            3.0,
            "credits",
        ),
        (
            {"estimated_cost": {"amount": 2}, "balance": {"current": {"amount": 5, "unit": "points"}}},
            2.0,
            5.0,
            "points",
        ),
        ({"price": {"total": 0.5}, "current_balance": {"amount": "7"}, "currency": "CNY"}, 0.5, 7.0, "CNY"),
    ],
)
def test_money_as_numbers_text_or_objects(body, cost, balance, currency):
    est = Estimate.model_validate(body)
    assert (est.estimated_cost, est.balance, est.currency) == (cost, balance, currency)
    assert est.sufficient == (cost <= balance)  # computed when the service does not say


@pytest.mark.parametrize(
    ("body", "fraction", "counts"),
    [
        ({"progress": 0.25}, 0.25, (None, None, None)),
        ({"progress": 45}, 0.45, (None, None, None)),
        ({"progress": "45%"}, 0.45, (None, None, None)),
        ({"progress": {"total": 4, "succeeded": 1, "failed": 1, "pending": 2}}, 0.5, (4, 1, 1)),
        ({"request_counts": {"total": 10, "completed": 5, "failed": 0}}, 0.5, (10, 5, 0)),
        (
            {"batchStats": {"requestCount": "8", "successfulRequestCount": "2", "failedRequestCount": "2"}},
            0.5,
            (8, 2, 2),
        ),
        (
            {"completionStats": {"successfulCount": "3", "failedCount": "1", "incompleteCount": "4"}},
            0.5,
            (8, 3, 1),
        ),
        ({"stats": {"total_count": 2, "success_count": 2}}, 1.0, (2, 2, None)),
    ],
)
def test_progress_as_a_number_text_or_counts(body, fraction, counts):
    job = Job.model_validate({"id": "j", "status": "running", **body})
    assert job.fraction == pytest.approx(fraction)
    assert (job.total, job.completed, job.failed) == counts


@pytest.mark.parametrize(
    ("word", "state", "terminal"),
    [
        ("SUCCEEDED", "completed", True),
        ("JOB_STATE_SUCCEEDED", "completed", True),
        ("success", "completed", True),
        ("done", "completed", True),
        ("finished", "completed", True),
        ("IN_PROGRESS", "running", False),
        ("processing", "running", False),
        ("validating", "queued", False),
        ("finalizing", "running", False),
        ("pending", "queued", False),
        ("canceled", "cancelled", True),
        ("cancelling", "cancelling", False),  # stopping: shown as such, not the end
        ("Canceling", "cancelling", False),
        ("expired", "expired", True),
        ("PARTIALLY_SUCCEEDED", "partially_failed", True),
        ("JOB_STATE_FAILED", "failed", True),
        ("something new", "unknown", False),
    ],
)
def test_statuses_as_services_spell_them(word, state, terminal):
    job = Job.model_validate({"job_id": "j", "state": word})
    assert (job.status, job.state, job.terminal) == (word, state, terminal)  # its word kept


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-12-03T01:00:00Z", 1796259600000),
        ("2026-12-03T09:00:00+08:00", 1796259600000),
        (1796259600, 1796259600000),
        (1796259600000, 1796259600000),
        ("1796259600", 1796259600000),
        ("yesterday", None),
    ],
)
def test_timestamps_iso_or_epoch(value, ms):
    assert Job.model_validate({"id": "j", "created_at": value}).created_ms == ms


@pytest.mark.parametrize(
    "body",
    [
        {"items": [{"id": "a"}], "total": 1},
        {"jobs": [{"jobId": "a"}], "has_more": False},
        {"list": [{"job_id": "a"}], "next_page": None},
        {"data": {"records": [{"id": "a"}]}},
        {"batches": [{"name": "batches/a"}], "nextPageToken": "x"},
        [{"id": "a"}],
    ],
)
def test_lists_under_any_name(body):
    page = JobPage.model_validate(body)
    assert [j.job_id for j in page.items] == ["a"]


def test_a_list_item_that_is_not_a_job_is_counted_not_fatal():
    page = JobPage.model_validate(
        {"items": [{"id": "a"}, {"nothing": 1}, "x"], "hasMore": True, "cursor": "c2"}
    )
    assert [j.job_id for j in page.items] == ["a"] and page.unreadable == 2
    assert (page.has_more, page.next_cursor) == (True, "c2")


def test_uploads_with_a_file_object_or_resource_names():
    assert UploadResult.model_validate({"file": {"id": "f1", "records": "3"}}).row_count == 3
    assert UploadResult.model_validate({"name": "files/f2"}).file_id == "f2"


def client_answering(status: int, body) -> BatchJobClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return BatchJobClient("http://svc.test", "t", transport=httpx.MockTransport(answer), retries=0)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"code": 40201, "message": "POINTS_INSUFFICIENT", "data": {}}, InsufficientBalance),
        (200, {"code": 401, "message": "token expired"}, AuthError),
        (200, {"success": False, "message": "job not found"}, NotFound),
        (200, {"code": "RATE_LIMITED", "message": "slow down", "data": None}, RateLimited),
        (200, {"code": 1, "message": "invalid model"}, Rejected),
        (400, {"detail": [{"loc": ["body", "model"], "msg": "field required"}]}, Rejected),
        (404, {"error_code": "JOB_NOT_FOUND", "message": "no such job"}, NotFound),
        (
            402,
            {"error": {"code": 402, "status": "FAILED_PRECONDITION", "message": "top up"}},
            InsufficientBalance,
        ),
        (401, "<html><body><h1>401 Authorization Required</h1></body></html>", AuthError),
    ],
)
async def test_failures_in_any_style_become_typed_errors(status, body, error):
    async with client_answering(status, body) as c:
        with pytest.raises(error) as e:
            await c.get_job("j1")
    assert "<" not in e.value.message  # an HTML page is read as its text


async def test_balance_figures_the_third_computed_and_where_to_top_up():
    body = {
        "code": 40201,
        "message": "POINTS_INSUFFICIENT",
        "data": {
            "current_balance": {"amount": 1.5},
            "required_balance": {"amount": 4},
            "topup_url": "https://x.test/pay",
        },
    }
    async with client_answering(200, body) as c:
        with pytest.raises(InsufficientBalance) as e:
            await c.precheck(3)
    assert (e.value.current, e.value.required, e.value.shortfall) == (1.5, 4.0, 2.5)
    assert e.value.recharge_url == "https://x.test/pay"


async def test_an_unusable_answer_is_a_bad_answer_and_a_submit_one_is_unknown():
    async with client_answering(200, {"code": 0, "data": {"status": "running"}}) as c:
        with pytest.raises(BadAnswer) as e:
            await c.get_job("j1")
        assert "running" in e.value.excerpt
        with pytest.raises(OutcomeUnknown):  # the job may exist: never "rejected"
            await c.submit("file_1")


def test_the_documented_table_lists_every_spelling():
    from pathlib import Path

    from batchjob.shapes import SPELLINGS, STATES

    doc = (Path(__file__).resolve().parents[2] / "docs/service-answers.md").read_text()
    lines = doc.splitlines()
    for table in (SPELLINGS, STATES):
        for field, spellings in table.items():
            row = f"| `{field}` | " + ", ".join(f"`{s}`" for s in spellings) + " |"
            assert row in lines, row
