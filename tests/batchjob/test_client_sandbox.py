"""The client against the sandbox over real HTTP: every endpoint and every error path."""

from __future__ import annotations

import asyncio
import base64

import httpx
import orjson
import pytest

from batchjob.client import BatchJobClient, Timeouts
from batchjob.errors import (
    CONTENTS_REQUIRED,
    NO_VALID_DATA_ROWS,
    UNSUPPORTED_FILE_TYPE,
    UNSUPPORTED_SCHEMA,
    AuthError,
    Conflict,
    InsufficientBalance,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Unavailable,
    ValidationError,
)
from tests.batchjob.conftest import TOKEN
from tests.files import xlsx


async def wait_terminal(client, job_id, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await client.get_job(job_id)
        if job.terminal:
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.02)


async def test_full_flow_csv(client, write):
    up = await client.upload(write("p.csv", "prompt\nfox\nowl\n"))
    assert up.file_id.startswith("file_") and up.row_count == 2
    est = await client.precheck(2)
    assert est.estimated_cost == pytest.approx(0.04) and est.balance == 1000 and est.sufficient
    job = await client.submit(up.file_id)
    assert job.state == "queued" and job.total == 2
    done = await wait_terminal(client, job.job_id)
    assert (done.state, done.completed, done.failed, done.fraction) == ("completed", 2, 0, 1.0)
    assert done.output_summary_url


async def test_every_terminal_status_on_purpose(client, write):
    cases = {
        "completed": "prompt\na\nb\n",
        "partially_failed": "prompt\na\nb [fail]\n",
        "failed": "prompt\na [fail]\nb [fail]\n",
    }
    for status, body in cases.items():
        up = await client.upload(write(f"{status}.csv", body))
        job = await wait_terminal(client, (await client.submit(up.file_id)).job_id)
        assert job.state == status
    summary = await client.fetch_summary(job.output_summary_url)
    assert [r["status"] for r in summary["records"]] == ["failed", "failed"]


async def test_upload_xlsx_and_jsonl(client, tmp_path, write):
    up = await client.upload(xlsx(tmp_path / "p.xlsx", {"S": [["提示词"], ["一只猫"], ["狗"]]}))
    assert up.row_count == 2
    up = await client.upload(write("v.jsonl", '{"contents": [{"parts": [{"text": "x"}]}]}\n'))
    assert up.row_count == 1


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("o.jsonl", '{"method": "POST", "url": "/v1/x", "body": {}}\n', CONTENTS_REQUIRED),
        ("s.jsonl", '{"foo": 1}\n', UNSUPPORTED_SCHEMA),
        ("c.csv", "name,size\nx,1\n", UNSUPPORTED_SCHEMA),
        ("e.csv", "prompt\n\n", NO_VALID_DATA_ROWS),
        ("p.pdf", "%PDF-1.4", UNSUPPORTED_FILE_TYPE),
        ("p.csv", b"%PDF-1.4 \x00\x01", UNSUPPORTED_FILE_TYPE),
    ],
)
async def test_upload_rejections_keep_the_server_message(client, write, name, body, message):
    with pytest.raises(ValidationError) as e:
        await client.upload(write(name, body))
    assert e.value.status == 400 and e.value.message == message


async def test_precheck_rejects_non_positive_counts(client):
    with pytest.raises(ValidationError):
        await client.precheck(0)


async def test_insufficient_balance_402(client, sandbox, write):
    sandbox.state.balance = 0.01
    up = await client.upload(write("p.csv", "prompt\na\nb\n"))
    with pytest.raises(InsufficientBalance) as e:
        await client.submit(up.file_id)
    assert (e.value.status, e.value.current, e.value.required) == (402, 0.01, 0.04)
    assert e.value.shortfall == pytest.approx(0.03)
    assert sandbox.state.jobs.get(e.value.details.get("job_id", "")) is None


async def test_not_found_and_malformed_ids(client):
    with pytest.raises(NotFound):
        await client.get_job("job_doesnotexist")
    with pytest.raises(NotFound):
        await client.submit("file_nope")
    with pytest.raises(NotFound):  # refused before any request: cannot reach another path
        await client.get_job("../files:upload")


async def test_list_paging_and_status_filter(client, sandbox, write):
    sandbox.state.config.records_per_second = 0.001  # stays running
    up = await client.upload(write("p.csv", "prompt\na\n"))
    ids = [(await client.submit(up.file_id)).job_id for _ in range(3)]
    page = await client.list_jobs(page=1, page_size=2)
    assert len(page.items) == 2 and page.page == 1 and page.page_size == 2 and page.total >= 3
    for job_id in ids:  # past the queue
        while (await client.get_job(job_id)).state != "running":
            await asyncio.sleep(0.02)
    running = await client.list_jobs(page=1, page_size=100, status="running")
    assert set(ids) <= {j.job_id for j in running.items}
    assert all(j.state == "running" for j in running.items)


async def test_cancel_running_then_409(client, sandbox, write):
    sandbox.state.config.records_per_second = 0.5
    up = await client.upload(write("p.csv", "prompt\na\nb\nc\n"))
    job = await client.submit(up.file_id)
    cancelled = await client.cancel(job.job_id, "changed my mind")
    assert cancelled.state == "cancelled" and cancelled.terminal
    assert (await client.get_job(job.job_id)).state == "cancelled"
    with pytest.raises(Conflict) as e:
        await client.cancel(job.job_id)
    assert e.value.status == 409


async def test_wrong_token_401(sandbox):
    async with BatchJobClient(sandbox.url, "wrong") as c:
        with pytest.raises(AuthError) as e:
            await c.list_jobs()
    assert e.value.status == 401 and "wrong" not in str(e.value)


@pytest.mark.parametrize("sandbox", ["ours"], indirect=True)  # the sandbox's own error shape
async def test_missing_token_401(sandbox):
    r = httpx.get(sandbox.url + "/v1/batch/jobs")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_envelope_and_retry_on_5xx_for_gets(client, sandbox, write):
    sandbox.state.config.envelope = True
    up = await client.upload(write("p.csv", "prompt\na\n"))
    assert up.row_count == 1  # {"data": ...} unwrapped
    sandbox.state.config.error_rate = 1.0
    before = sandbox.state.requests
    with pytest.raises(Unavailable):
        await client.list_jobs()
    assert sandbox.state.requests - before == client.retries + 1  # GET retried, bounded


async def test_posts_are_not_retried_on_5xx(client, sandbox, write):
    sandbox.state.config.error_rate = 1.0
    before = sandbox.state.requests
    with pytest.raises(Unavailable):
        await client.upload(write("p.csv", "prompt\na\n"))
    assert sandbox.state.requests - before == 1


async def test_429_retry_after_honoured_on_get(sandbox):
    sandbox.state.config.rate_limit_every = 2
    sandbox.state.config.retry_after = 0.2
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with BatchJobClient(sandbox.url, TOKEN, sleep=sleep) as c:
        await c.list_jobs()
        await c.list_jobs()  # the 2nd request of the pair is limited, then retried
    assert slept == [0.2]
    sandbox.state.config.rate_limit_every = 1
    async with BatchJobClient(sandbox.url, TOKEN, sleep=sleep) as c:
        with pytest.raises(RateLimited) as e:
            await c.precheck(1)  # a POST: reported, not retried
    assert e.value.retry_after == 0.2


async def test_lost_submit_reply_is_outcome_unknown_and_posted_once(sandbox, write):
    sandbox.state.config.drop_submit_replies = 1
    sandbox.state.config.drop_seconds = 1.0
    async with BatchJobClient(sandbox.url, TOKEN, timeouts=Timeouts(read=0.5)) as c:
        up = await c.upload(write("p.csv", "prompt\na\n"))
        jobs_before = len(sandbox.state.jobs)
        with pytest.raises(OutcomeUnknown):
            await c.submit(up.file_id)
        assert sandbox.state.submits == 1
        assert len(sandbox.state.jobs) == jobs_before + 1  # the job exists nonetheless
        page = await c.list_jobs(page_size=100)
        assert any(j.file_id == up.file_id for j in page.items)  # reconcilable by file_id


async def test_summary_url_needs_its_secret(client, write):
    up = await client.upload(write("p.csv", "prompt\na\n"))
    job = await wait_terminal(client, (await client.submit(up.file_id)).job_id)
    tampered = job.output_summary_url[:-3] + "xyz"
    with pytest.raises(NotFound):
        await client.fetch_summary(tampered)


async def test_upload_body_is_valid_json_with_base64(sandbox, write, tmp_path):
    """The streamed body is exactly {filename, mode, content(base64)}, sized upfront."""
    seen = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        body = b"".join([chunk async for chunk in request.stream])
        seen["length"] = request.headers["content-length"]
        seen["body"] = orjson.loads(body)
        seen["raw_len"] = len(body)
        return httpx.Response(200, json={"file_id": "f1", "row_count": 1})

    data = bytes(range(256)) * 3000 + b"tail"
    src = write("prompts.jsonl", data)
    async with BatchJobClient("http://svc", "t", transport=httpx.MockTransport(handler)) as c:
        await c.upload(src, filename="../../etc/pass wd\x00\n.jsonl")
    assert int(seen["length"]) == seen["raw_len"]
    assert base64.b64decode(seen["body"]["content"]) == data
    assert seen["body"]["filename"] == "pass_wd.jsonl"
    assert seen["body"]["mode"] == "fast"


async def test_the_sandbox_answers_kept_connections_without_nagles_delay():
    """The stand-ins' listening sockets say IPPROTO_TCP: asyncio turns Nagle's algorithm off
    only on connections that report it, and without that every answer after the first on a
    kept connection waited for the client's delayed ACK (~40 ms)."""
    import asyncio
    import socket

    from batchjob.sandbox_server import listening_socket

    served: list[tuple[int, int]] = []

    def made(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        served.append((sock.proto, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        writer.close()

    listener = listening_socket()
    server = await asyncio.start_server(made, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname())
        writer.close()
        for _ in range(1000):  # until the server side has seen it
            if served:
                break
            await asyncio.sleep(0.001)
    assert served and served[0][0] == socket.IPPROTO_TCP and served[0][1] != 0


async def test_a_sandbox_told_to_read_in_process_reads_uploads_without_the_worker(
    client, sandbox, write, monkeypatch
):
    """bench/e2e's stand-in reads what the bot wrote in its own process (the worker's forked
    readers would take the cores the bot is measured on); by default uploads go to the
    isolated worker."""
    from batchjob import sandbox_files

    def isolated(*a, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError("read in the parse worker")

    monkeypatch.setattr(sandbox_files, "convert_file", isolated)
    sandbox.state.config.read_in_process = True
    up = await client.upload(write("p.csv", "prompt\nfox\nowl\n"))
    assert up.row_count == 2
    sandbox.state.config.read_in_process = False
    with pytest.raises(Exception):  # noqa: B017 (the 500 of the failing reader, whatever its shape)
        await client.upload(write("q.csv", "prompt\nfox\n"))
