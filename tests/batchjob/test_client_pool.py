"""The BatchJob client on its own connection pool (no transport given), against real
servers that refuse, stay silent, cut answers short or ask to wait: the same retry rules
as through httpx (tests/batchjob/test_client_faults.py), the same errors."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from batchjob.client import BatchJobClient, Timeouts
from batchjob.errors import OutcomeUnknown, Unavailable
from tests.batchjob.test_http_transport import read_request, serve

SECRET = "pool-s3cr3t-token"
JOB = {"job_id": "j1", "status": "running", "total": 10, "completed": 3, "failed": 1}


def make(port: int, **kw) -> tuple[BatchJobClient, list[float]]:  # type: ignore[no-untyped-def]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    timeouts = kw.pop("timeouts", Timeouts(connect=2, read=2, write=2, pool=2))
    return BatchJobClient(f"http://127.0.0.1:{port}", SECRET, sleep=sleep, timeouts=timeouts, **kw), slept


def answer(status: int, body: object, extra: bytes = b"") -> bytes:
    raw = json.dumps(body).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        len(raw),
        extra,
        raw,
    )


async def test_a_get_waits_as_told_then_reads_the_answer_with_our_headers_and_query():
    heads: list[bytes] = []
    busy = answer(503, {"error": "busy"}, b"Retry-After: 2\r\n")
    answers = [busy, answer(200, {"items": [JOB], "total": 1})]

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        while answers:
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            heads.append(head)
            writer.write(answers.pop(0))
            await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server:
        c, slept = make(port)
        page = await c.list_jobs(page=2, status="running")
        await c.aclose()
    assert slept == [2.0] and [j.job_id for j in page.items] == ["j1"]
    head = heads[-1].decode().lower()
    assert head.startswith("get /v1/batch/jobs?page=2&page_size=20&status=running http/1.1")
    assert f"authorization: bearer {SECRET}".lower() in head and "accept: application/json" in head


async def test_an_upload_streams_its_body_with_its_length(tmp_path):
    got: list[bytes] = []

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        _, body = await read_request(reader)
        got.append(body)
        writer.write(answer(200, {"file_id": "f1", "row_count": 2}))
        await writer.drain()
        writer.close()

    data = b'{"prompt":"a"}\n' * 50_000  # past one upload chunk
    path = tmp_path / "p.jsonl"
    path.write_bytes(data)
    server, port = await serve(handler)
    async with server:
        c, _ = make(port)
        up = await c.upload(path, filename="p.jsonl")
        await c.aclose()
    assert up.file_id == "f1"
    sent = json.loads(got[0])
    assert sent["filename"] == "p.jsonl" and base64.b64decode(sent["content"]) == data


async def test_a_refused_service_is_retried_and_then_unavailable():
    server, port = await serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    c, slept = make(port, retries=2)
    with pytest.raises(Unavailable):
        await c.precheck(10)  # a POST that never left: retried too
    assert len(slept) == 2
    await c.aclose()


async def test_a_silent_service_is_an_unknown_outcome_for_a_post_and_retried_for_a_get():
    requests = 0
    release = asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal requests
        await read_request(reader)
        requests += 1
        await release.wait()
        writer.close()

    server, port = await serve(handler)
    async with server:
        c, slept = make(port, retries=1, timeouts=Timeouts(connect=2, read=0.05, write=2, pool=2))
        with pytest.raises(OutcomeUnknown):
            await c.submit("f1")
        assert requests == 1 and slept == []
        with pytest.raises(Unavailable):
            await c.get_job("j1")
        assert requests == 3 and len(slept) == 1
        release.set()
        await c.aclose()


async def test_an_answer_cut_short_is_retried_on_a_get():
    served = 0

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        nonlocal served
        await read_request(reader)
        served += 1
        full = answer(200, JOB)
        writer.write(full[: len(full) - 5] if served == 1 else full)  # the first ends early
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    async with server:
        c, slept = make(port)
        job = await c.get_job("j1")
        await c.aclose()
    assert job.processed == 4 and served == 2 and len(slept) == 1


def test_no_transport_given_means_the_pool_and_one_given_or_a_proxy_means_httpx(monkeypatch):
    import httpx

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert BatchJobClient("https://svc.example", "t")._pool is not None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # httpx's client honours it
    assert BatchJobClient("https://svc.example", "t")._pool is None
    monkeypatch.setenv("NO_PROXY", "svc.example")
    assert BatchJobClient("https://svc.example", "t")._pool is not None
    given = httpx.MockTransport(lambda r: httpx.Response(200))
    assert BatchJobClient("http://x", "t", transport=given)._pool is None
