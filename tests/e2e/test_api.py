"""The agents' HTTP API over real HTTP, against the sandbox: submissions through the chat
pipeline, the confirm gate, idempotency, bad requests, signed callbacks with retries, an
OpenClaw stand-in, and a callback sent by another replica."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from batchjob.client import BatchJobClient, Timeouts
from batchjob.sandbox_server import listening_socket
from bot.api.server import attach, standalone
from bot.channels import ChannelRouter
from conversation.app import ConversationApp
from conversation.settings import ConversationSettings
from tests.conftest import TOKEN
from tests.e2e.conftest import until
from tests.e2e.served import Served

CSV = b"prompt,aspect_ratio\na red fox,1:1\na blue owl,16:9\n,\nbad row,7:7\n"


class Receiver(Served):
    """Records what it is sent; answers 500 to the first `failures` requests."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.failures = failures
        self.lock = threading.Lock()

        async def take(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                self.got.append((request.url.path, dict(request.headers), body))
                if self.failures > 0:
                    self.failures -= 1
                    return JSONResponse({"no": 1}, status_code=500)
            return JSONResponse({"ok": True})

        self.serve(Starlette(routes=[Route("/{path:path}", take, methods=["POST"])]))


def make_app(redis, sandbox, tmp_path, replica="r1"):
    settings = ConversationSettings(
        media_dir=tmp_path / replica,
        poll_min_seconds=0.05,
        poll_max_seconds=0.2,
        progress_edit_seconds=0,
        unsafe_allow_loopback_urls=True,
        api_progress_seconds=3600,
    )
    client = BatchJobClient(sandbox.url, TOKEN, timeouts=Timeouts(read=2))
    router = ChannelRouter()
    app = ConversationApp(redis, client, router, settings, replica=replica)
    return app, attach(app, router)


@pytest.fixture
async def api(redis, sandbox, tmp_path):
    app, agents = make_app(redis, sandbox, tmp_path)
    sock = listening_socket()
    # A connection left open must not hold the teardown (uvicorn waits for them unbounded).
    config = uvicorn.Config(
        standalone(agents), log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started, what="the API server")
    app.start_watcher()
    key, rec = await agents.keys.create(name="agent")
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        yield c, agents, rec
    server.should_exit = True
    await serving
    await app.stop()
    await app.client.aclose()


async def finished(c, sub_id):
    async def done():
        return (await c.get(f"/v1/submissions/{sub_id}")).json()["state"]

    for _ in range(3000):  # polled, bounded: the sandbox runs the job in well under a minute
        state = await done()
        if state in ("completed", "partially_completed", "failed", "cancelled"):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError("the job did not finish")


async def test_an_upload_waits_at_the_confirm_gate_then_runs_and_calls_back_signed(api):
    c, agents, key = api
    receiver = Receiver().start()
    try:
        r = await c.post(
            "/v1/submissions",
            files={"file": ("prompts.csv", CSV, "text/csv")},
            data={
                "skip_invalid": "true",
                "callback": f'{{"url": "{receiver.url}/hook"}}',
                "metadata": '{"n": 7}',
            },
        )
        assert r.status_code == 202, r.text
        sub = r.json()
        assert sub["state"] == "awaiting_confirmation" and sub["metadata"] == {"n": 7}
        assert sub["report"]["rows"] == {"total": 4, "valid": 2, "invalid": 1, "skipped": 1}
        assert sub["report"]["errors"][0]["row"] == 5  # the user's own row number
        assert sub["estimate"]["estimated_cost"] == pytest.approx(0.04)
        r = await c.post(f"/v1/submissions/{sub['id']}/confirm")
        assert r.json()["state"] in ("submitted", "running", "completed")
        assert await finished(c, sub["id"]) == "completed"
        r = await c.get(f"/v1/submissions/{sub['id']}/results")
        records = r.json()["records"]
        whole = (await c.get(f"/v1/submissions/{sub['id']}?include=results")).json()
        assert whole["results"]["records"] == records and whole["job"]["completed"] == 2
        assert [x["row"] for x in records] == [2, 3], records
        assert all(x["status"] == "succeeded" and len(x["images"]) == 1 for x in records), records
        image = await c.get(records[1]["images"][0])  # an inline image, decoded and streamed
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert (await c.get(f"/v1/submissions/{sub['id']}/results/1/9")).status_code == 404
        # The state reads "completed" as soon as the job does; its terminal event comes with
        # the watcher's summary, a moment later: deliver until it has gone out.
        for _ in range(500):
            while await agents.callbacks.run_once():
                pass
            if any(json.loads(b)["event"] == "terminal" for _, _, b in receiver.got):
                break
            await asyncio.sleep(0.02)
        events = sorted((json.loads(b) for _, _, b in receiver.got), key=lambda e: e["sequence"])
        assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
        kinds = [e["event"] for e in events]
        assert kinds[:2] == ["awaiting_confirmation", "submitted"] and kinds[-1] == "terminal", kinds
        assert events[-1]["state"] == "completed" and events[-1]["metadata"] == {"n": 7}
        for _, headers, body in receiver.got:
            Webhook(key.webhook_secret).verify(body, headers)  # raises when forged
    finally:
        receiver.stop()


async def test_url_rows_inline_and_file_id(api, sandbox):
    c, _agents, _ = api
    r = await c.post(
        "/v1/submissions", json={"rows": [{"prompt": "a cat"}, {"prompt": "a dog"}], "confirm": True}
    )
    assert r.status_code == 202 and r.json()["state"] in ("submitted", "running", "completed"), r.text
    file_id = next(iter(sandbox.state.files))
    r = await c.post("/v1/submissions", json={"file_id": file_id, "count": 2, "estimate_only": True})
    assert r.json()["state"] == "estimated" and r.json()["estimate"]["record_count"] == 2
    r = await c.post("/v1/submissions", json={"url": f"{sandbox.url}/no/such/prompts.csv"})
    assert r.status_code == 202 and r.json()["state"] == "failed" and r.json()["message"], r.text
    public = Served()
    public.serve(Starlette(routes=[Route("/p.csv", lambda request: Response(CSV, media_type="text/csv"))]))
    public.start()
    try:
        r = await c.post("/v1/submissions", json={"url": f"{public.url}/p.csv", "skip_invalid": True})
        assert r.json()["state"] == "awaiting_confirmation" and r.json()["report"]["rows"]["valid"] == 2
    finally:
        public.stop()


async def test_an_idempotency_key_makes_one_submission_whatever_the_repeats(api, sandbox):
    c, agents, _ = api
    body = {"rows": [{"prompt": "one fox"}], "confirm": True, "idempotency_key": "nightly-2026-12-03"}
    got = await asyncio.gather(*(c.post("/v1/submissions", json=body) for _ in range(8)))
    ids = {r.json().get("id") for r in got}
    assert None not in ids, [r.text for r in got]
    assert len(ids) == 1 and sorted(r.status_code for r in got).count(202) == 1
    jobs = [j for j in sandbox.state.jobs.values() if sandbox.state.files[j.file_id].filename == "rows.jsonl"]
    r = await c.post("/v1/submissions", json={**body, "rows": [{"prompt": "another"}]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"
    assert list(agents.uploads.iterdir()) == []  # read or refused, every upload is removed
    assert len(
        [j for j in sandbox.state.jobs.values() if sandbox.state.files[j.file_id].filename == "rows.jsonl"]
    ) == len(jobs)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"json": {"rows": [{"prompt": "x"}], "colour": "red"}}, 400, "unknown_field"),
        (
            {"json": {"rows": [{"prompt": "x"}], "callback": {"url": "http://10.0.0.1/x"}}},
            400,
            "callback_refused",
        ),
        (
            {"json": {"rows": [{"prompt": "x"}], "callback": {"url": "file:///etc/passwd"}}},
            400,
            "callback_refused",
        ),
        ({"json": {"rows": "nope"}}, 400, "invalid_field"),
        ({"json": {"file_id": "file_abc"}}, 400, "invalid_input"),
        ({"json": {"url": "https://x.example/a.csv", "rows": [{"prompt": "x"}]}}, 400, "invalid_input"),
        ({"json": {"rows": [{"prompt": "x"}], "confirm": "maybe"}}, 400, "invalid_field"),
        ({"json": {"rows": [{"prompt": "x"}], "metadata": {"k": "v" * 5000}}}, 400, "invalid_field"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"x" * 100, "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"json": {"rows": [{"prompt": "x" * 1000}] * 20_000}}, 413, "too_large"),
    ],
)
async def test_bad_requests_get_a_clear_error_and_change_nothing(api, kwargs, status, code):
    c, agents, key = api
    r = await c.post("/v1/submissions", **kwargs)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert await agents.subs.page(key.id, None, 10) == []


async def test_keys_see_only_their_own_and_a_revoked_key_nothing(api):
    c, agents, _key = api
    sub = (await c.post("/v1/submissions", json={"rows": [{"prompt": "x"}]})).json()
    other, other_rec = await agents.keys.create(name="other")
    headers = {"Authorization": f"Bearer {other}"}
    assert (await c.get(f"/v1/submissions/{sub['id']}", headers=headers)).status_code == 404
    assert (await c.post(f"/v1/submissions/{sub['id']}/cancel", headers=headers)).status_code == 404
    assert (await c.get("/v1/submissions", headers=headers)).json()["items"] == []
    assert (await c.get("/v1/submissions")).json()["items"][0]["id"] == sub["id"]
    await agents.keys.revoke(other_rec.id)
    assert (await c.get("/v1/submissions", headers=headers)).status_code == 401
    assert (await c.get("/v1/submissions", headers={"Authorization": "Bearer bjk_x"})).status_code == 401
    assert (await c.get("/v1/openapi.json")).json()["openapi"].startswith("3.")
    r = await c.post(f"/v1/submissions/{sub['id']}/cancel")
    assert r.json()["state"] == "cancelled"


async def test_callbacks_are_retried_with_the_same_id_and_sent_by_another_replica(
    api, redis, sandbox, tmp_path
):
    c, _agents, key = api
    receiver = Receiver(failures=2).start()
    try:
        r = await c.post(
            "/v1/submissions", json={"rows": [{"prompt": "x"}], "callback": {"url": f"{receiver.url}/cb"}}
        )
        assert r.json()["state"] == "awaiting_confirmation"
        # This replica dies before sending; another one (same Redis) sends, retries, succeeds.
        _, other = make_app(redis, sandbox, tmp_path, replica="r2")
        now = int(time.time() * 1000)
        assert await other.callbacks.run_once(now=now) == 1
        assert await other.callbacks.run_once(now=now + 5_000) == 1
        assert await other.callbacks.run_once(now=now + 15_000) == 1
        assert await other.callbacks.run_once(now=now + 60_000) == 0  # delivered: nothing left
        ids = {h["webhook-id"] for _, h, _ in receiver.got}
        assert len(receiver.got) == 3 and len(ids) == 1  # one delivery, retried: receivers dedupe
        Webhook(key.webhook_secret).verify(receiver.got[-1][2], receiver.got[-1][1])
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 44).verify(receiver.got[-1][2], receiver.got[-1][1])
    finally:
        receiver.stop()


@pytest.mark.parametrize("session_key", ["agent:main:cron", None])
async def test_openclaw_gets_the_terminal_summary_in_its_session(api, session_key):
    c, agents, _ = api
    claw = Receiver().start()
    try:
        target = {"url": claw.url, "token": "oc-token"} | (
            {"session_key": session_key} if session_key else {}
        )
        body = {"rows": [{"prompt": "x"}], "confirm": True, "callback": {"openclaw": target}}
        r = await c.post("/v1/submissions", json=body)
        assert await finished(c, r.json()["id"]) == "completed"
        for _ in range(100):  # bounded: the terminal delivery is queued once the watcher saw the end
            if claw.got:
                break
            await agents.callbacks.run_once()
            await asyncio.sleep(0.02)
        path, headers, raw = claw.got[0]
        doc = json.loads(raw)
        assert path == "/hooks/agent" and headers["authorization"] == "Bearer oc-token"
        assert "ended: completed" in doc["message"] and doc["name"] == "BatchJob" and doc["deliver"] is True
        # A Gateway refuses a sessionKey it does not allow: sent only when the agent gave one.
        assert doc.get("sessionKey") == session_key and "agentId" not in doc
        assert len(claw.got) == 1  # the end only: a session is not spammed with progress
    finally:
        claw.stop()


def _structured(result):
    assert not result.isError, result.content
    return result.structuredContent or json.loads(result.content[0].text)


async def test_mcp_over_http_with_the_same_keys_and_progress(api):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    c, agents, _ = api
    url = str(c.base_url).rstrip("/") + "/mcp"
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done, total, message):
        progress.append((done, total))

    def client(key_header):
        return streamable_http_client(
            url, http_client=httpx.AsyncClient(headers={"Authorization": key_header})
        )

    async with client(c.headers["authorization"]) as (r, w, _), ClientSession(r, w) as s:
        await s.initialize()
        names = {t.name for t in (await s.list_tools()).tools}
        assert {
            "inspect_file",
            "submit_batch",
            "job_status",
            "job_results",
            "cancel_job",
            "list_jobs",
        } <= names
        sub = _structured(await s.call_tool("submit_batch", {"rows": [{"prompt": "a"}, {"prompt": "b"}]}))
        assert sub["state"] == "awaiting_confirmation"  # estimate first: no job without confirm
        sub = _structured(await s.call_tool("confirm_submission", {"submission_id": sub["id"]}))
        done = _structured(
            await s.call_tool(
                "job_status",
                {"submission_id": sub["id"], "wait_seconds": 60},
                progress_callback=on_progress,
            )
        )
        assert done["state"] == "completed" and progress and progress[-1][1] == 2
        results = _structured(await s.call_tool("job_results", {"submission_id": sub["id"]}))
        assert [x["row"] for x in results["records"]] == [1, 2]
        await s.call_tool("submit_batch", {"rows": [{"prompt": "a"}], "idempotency_key": "m1"})
        clash = await s.call_tool("submit_batch", {"rows": [{"prompt": "b"}], "idempotency_key": "m1"})
        assert clash.isError and "idempotency_conflict" in clash.content[0].text
        assert list(agents.uploads.iterdir()) == []  # rows written for a refused call are removed
        refused = await s.call_tool("submit_batch", {"path": "/etc/passwd"})
        assert refused.isError and "stdio only" in refused.content[0].text  # no paths over HTTP
    async with client("Bearer bjk_nope") as (r, w, _), ClientSession(r, w) as s:
        await s.initialize()
        denied = await s.call_tool("list_jobs", {})
        assert denied.isError and "unauthorized" in denied.content[0].text


async def test_mcp_over_stdio_driven_by_the_sdk_client(sandbox, tmp_path):
    import os
    import sys

    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\na red fox\na blue owl\n")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "BATCHJOB_BASE_URL": sandbox.url,
        "BATCHJOB_BEARER_TOKEN": TOKEN,
        "BOT_MEDIA_DIR": str(tmp_path / "media"),
        "BOT_POLL_MIN_SECONDS": "0.05",
        "BOT_POLL_MAX_SECONDS": "0.2",
    }
    server = StdioServerParameters(command=sys.executable, args=["-m", "bot.main", "--mcp"], env=env)
    async with stdio_client(server) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        checked = _structured(await s.call_tool("inspect_file", {"path": str(prompts)}))
        assert checked["report"]["rows"]["valid"] == 2 and checked["estimate"]["record_count"] == 2
        sub = _structured(
            await s.call_tool(
                "submit_batch", {"path": str(prompts), "confirm": True, "idempotency_key": "k1"}
            )
        )
        again = _structured(
            await s.call_tool(
                "submit_batch", {"path": str(prompts), "confirm": True, "idempotency_key": "k1"}
            )
        )
        assert again["id"] == sub["id"]
        done = _structured(await s.call_tool("job_status", {"submission_id": sub["id"], "wait_seconds": 60}))
        assert done["state"] == "completed"
        listed = _structured(await s.call_tool("list_jobs", {}))
        assert next(x["id"] for x in listed["items"]) == sub["id"]


async def test_a_receiver_that_answers_without_end_is_not_read(api):
    """Only the status counts: a callback receiver streaming an endless body neither holds
    the sender nor fills its memory."""
    from starlette.responses import StreamingResponse

    c, agents, _ = api

    async def endless():
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0)

    flood = Served()
    flood.serve(
        Starlette(routes=[Route("/cb", lambda request: StreamingResponse(endless()), methods=["POST"])])
    )
    flood.start()
    try:
        r = await c.post(
            "/v1/submissions", json={"rows": [{"prompt": "x"}], "callback": {"url": f"{flood.url}/cb"}}
        )
        assert r.json()["state"] == "awaiting_confirmation"
        assert await agents.callbacks.run_once() == 1
        assert (
            agents.callbacks.sent == 1
            and await agents.callbacks.run_once(now=int(time.time() * 1000) + 60_000) == 0
        )
    finally:
        flood.server.force_exit = True
        flood.stop()


async def test_a_receiver_that_never_answers_holds_only_its_own_delivery(api):
    c, agents, _ = api

    async def never(request):
        await asyncio.Event().wait()

    hole = Served()
    hole.serve(Starlette(routes=[Route("/cb", never, methods=["POST"])]))
    hole.start()
    receiver = Receiver().start()
    sender = asyncio.create_task(agents.callbacks.run(every_s=0.02))
    try:
        for url in (f"{hole.url}/cb", f"{receiver.url}/cb"):
            r = await c.post("/v1/submissions", json={"rows": [{"prompt": "x"}], "callback": {"url": url}})
            assert r.json()["state"] == "awaiting_confirmation"
        # The receiver records a request before it answers: done once the sender counted it.
        await until(lambda: agents.callbacks.sent == 1, what="the other receiver's callback")
        # Delivered while the first one still waits for its receiver (10 s before it gives up).
        assert agents.callbacks.failed == 0 and len(receiver.got) == 1
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        receiver.stop()
        hole.server.force_exit = True
        hole.stop()
