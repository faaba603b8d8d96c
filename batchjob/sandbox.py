"""A local BatchJob-compatible server for development and tests (not for production).

Same endpoints, auth and error shapes as the service as far as its contract is known
(README: "Sandbox API"). Jobs run on the clock: queued for `queue_seconds`, then
`records_per_second` records are processed; records whose prompt contains
`fail_marker` fail, so completed, partially_failed and failed can all be produced on
purpose. Fault knobs (latency, 5xx rate, 429 with Retry-After, dropped submit replies)
are set at start or at run time through `/_sandbox/config`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import random
import secrets
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from batchjob import sandbox_results as results
from batchjob.errors import UNSUPPORTED_FILE_TYPE
from batchjob.sandbox_files import ACCEPTED_EXTENSIONS, Refusal, first_line_refusal, read_upload
from batchjob.sandbox_state import Job, SandboxConfig, SandboxState, StoredFile, iso
from batchjob.sandbox_styles import STYLES
from batchjob.sandbox_styles import answer as style_answer
from batchjob.sandbox_styles import error as style_error


def _json(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, envelope: bool = False
) -> Response:
    if envelope and status < 400:
        data = {"data": data}
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
    return _json({"error": {"code": code, "message": message, **extra}}, status, headers)


def create_app(config: SandboxConfig | None = None) -> Starlette:
    state = SandboxState(config or SandboxConfig())
    tmp = tempfile.TemporaryDirectory(prefix="batchjob-sandbox-")

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def guard(request: Request) -> Response | None:
        """Auth, then the fault knobs, in the order a real gateway would apply them."""
        cfg = state.config
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {cfg.token}".encode()):
            return _error(401, "unauthorized", "missing or invalid bearer token")
        state.requests += 1
        if cfg.latency:
            await asyncio.sleep(cfg.latency)
        if cfg.rate_limit_every and state.requests % cfg.rate_limit_every == 0:
            return _error(429, "rate_limited", "too many requests", retry_after=cfg.retry_after)
        if cfg.error_rate and random.random() < cfg.error_rate:
            return _error(503, "unavailable", "service temporarily unavailable")
        return None

    async def body(request: Request) -> dict[str, Any] | Response:
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "invalid_request", "body is not JSON")
        if not isinstance(data, dict):
            return _error(400, "invalid_request", "body must be a JSON object")
        return data

    def ok(data: Any, status: int = 200) -> Response:
        return _json(data, status, envelope=state.config.envelope)

    async def upload(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        data = await body(request)
        if isinstance(data, Response):
            return data
        filename, content = data.get("filename"), data.get("content")
        mode = data.get("mode") or "fast"
        if not isinstance(filename, str) or not isinstance(content, str):
            return _error(400, "invalid_request", "filename and content (base64) are required")
        try:
            raw = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            return _error(400, "invalid_request", "content is not valid base64")
        ext = Path(filename).suffix.lower()
        if ext not in ACCEPTED_EXTENSIONS:
            return _error(400, "unsupported_file_type", UNSUPPORTED_FILE_TYPE)
        if ext == ".jsonl":
            first = next((ln for ln in raw.splitlines() if ln.strip()), b"")
            if (refused := first_line_refusal(first)) is not None:
                return _error(*refused)
        cfg = state.config
        read = await asyncio.to_thread(
            read_upload, raw, ext, Path(tmp.name), cfg.read_in_process, cfg.fail_marker
        )
        if isinstance(read, Refusal):
            return _error(*read)
        prompts, fail_at, ratios = read
        f = StoredFile(
            file_id="file_" + secrets.token_hex(8),
            filename=filename,
            mode=str(mode),
            row_count=len(prompts),
            fail_at=fail_at,
            prompts=prompts,
            created_at=iso(),
            ratios=ratios,
        )
        state.files[f.file_id] = f
        return ok(
            {
                "file_id": f.file_id,
                "filename": f.filename,
                "mode": f.mode,
                "row_count": f.row_count,
                "created_at": f.created_at,
            }
        )

    async def precheck(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        data = await body(request)
        if isinstance(data, Response):
            return data
        count = data.get("record_count")
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return _error(400, "invalid_request", "record_count must be a positive integer")
        model = str(data.get("model") or "google/gemini-2.5-flash-image")
        mode = str(data.get("mode") or "fast")
        price = state.config.price(model, mode)
        cost = round(count * price, 6)
        short = cost > state.balance
        return ok(
            {
                "record_count": count,
                "model": model,
                "mode": mode,
                "unit_price": price,
                "estimated_cost": cost,
                "currency": "credits",
                "balance": round(state.balance, 6),
                "sufficient": cost <= state.balance,
                **({"recharge_url": state.config.topup_url} if short and state.config.topup_url else {}),
            }
        )

    async def create_job(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        state.submits += 1
        data = await body(request)
        if isinstance(data, Response):
            return data
        f = state.files.get(str(data.get("file_id")))
        if f is None:
            return _error(404, "file_not_found", "file not found")
        model = str(data.get("model") or "google/gemini-2.5-flash-image")
        mode = str(data.get("mode") or "fast")
        cost = round(f.row_count * state.config.price(model, mode), 6)
        with state.lock:
            if cost > state.balance:
                return _error(
                    402,
                    "insufficient_balance",
                    "insufficient balance",
                    current_balance=round(state.balance, 6),
                    required=cost,
                    shortfall=round(cost - state.balance, 6),
                    **({"topup_url": state.config.topup_url} if state.config.topup_url else {}),
                )
            state.balance -= cost
            job = Job(
                job_id="job_" + secrets.token_hex(8),
                file_id=f.file_id,
                model=model,
                mode=mode,
                total=f.row_count,
                fail_at=f.fail_at,
                created=state.clock(),
                created_at=iso(),
                summary_secret=secrets.token_urlsafe(12),
            )
            state.jobs[job.job_id] = job
            drop = state.config.drop_submit_replies > 0
            if drop:
                state.config.drop_submit_replies -= 1
        if drop:
            # The job exists; the answer never comes (the client gives up first).
            await asyncio.sleep(state.config.drop_seconds)
        return ok(state.view(job, base(request)))

    async def get_job(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        job = state.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "job_not_found", "job not found")
        return ok(state.view(job, base(request)))

    async def list_jobs(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        try:
            page = max(1, int(request.query_params.get("page", 1)))
            size = max(1, min(100, int(request.query_params.get("page_size", 20))))
        except ValueError:
            return _error(400, "invalid_request", "page and page_size must be integers")
        status = request.query_params.get("status")
        views = [state.view(j, base(request)) for j in sorted(state.jobs.values(), key=lambda j: -j.created)]
        if status:
            views = [v for v in views if v["status"] == status]
        items = views[(page - 1) * size : page * size]
        return ok({"items": items, "page": page, "page_size": size, "total": len(views)})

    async def cancel(request: Request) -> Response:
        if (denied := await guard(request)) is not None:
            return denied
        data = await body(request)
        if isinstance(data, Response):
            return data
        job = state.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "job_not_found", "job not found")
        with state.lock:
            view = state.view(job, base(request))
            if view["status"] not in ("queued", "running"):
                return _error(409, "job_not_cancellable", f"job is {view['status']}")
            job.cancelled = (view["completed"], view["failed"], state.clock())
            job.reason = str(data.get("reason") or "")[:500]
        return ok(state.view(job, base(request)))

    async def job_route(request: Request) -> Response:
        # Starlette's path converters stop at ":"; split "{id}:cancel" here.
        job_id, sep, action = request.path_params["rest"].partition(":")
        request.scope["path_params"] = {"job_id": job_id}
        if request.method == "POST" and sep and action == "cancel":
            return await cancel(request)
        if request.method == "GET" and not sep:
            return await get_job(request)
        return _error(404, "not_found", "no such endpoint")

    async def summary(request: Request) -> Response:
        job = state.jobs.get(request.path_params["job_id"])
        if job is None or not hmac.compare_digest(job.summary_secret, request.path_params["secret"]):
            return _error(404, "not_found", "not found")
        view = state.view(job, base(request))
        f = state.files.get(job.file_id)
        processed = view["completed"] + view["failed"]
        images = f"{base(request)}/sandbox/images/{job.job_id}/{job.summary_secret}/{{i}}.png"
        records = results.summary_records(processed, set(job.fail_at), f.prompts if f else [], images)
        return _json({"job_id": job.job_id, "status": view["status"], "records": records})

    def _finished(request: Request) -> tuple[Job, StoredFile | None, int] | None:
        job = state.jobs.get(request.path_params["job_id"])
        if job is None or not hmac.compare_digest(job.summary_secret, request.path_params["secret"]):
            return None
        view = state.view(job, base(request))
        return job, state.files.get(job.file_id), view["completed"] + view["failed"]

    async def results_file(request: Request) -> Response:
        found = _finished(request)
        if found is None:
            return _error(404, "not_found", "not found")
        return _results_of(*found)

    def _results_of(job: Job, f: StoredFile | None, processed: int) -> Response:
        lines = results.results_lines(
            processed, set(job.fail_at), f.prompts if f else [], f.ratios if f else []
        )
        return StreamingResponse(lines, media_type="application/jsonl")

    async def file_content(request: Request) -> Response:
        """A results file by its id (`result_file_id`), with the token, as OpenAI-style
        services serve output files."""
        if (denied := await guard(request)) is not None:
            return denied
        job = state.jobs.get(request.path_params["file_id"].removeprefix("res_"))
        if job is None or not request.path_params["file_id"].startswith("res_"):
            return _error(404, "not_found", "no such file")
        view = state.view(job, base(request))
        if view["output_file_url"] is None and not state.config.results_file_id:
            return _error(404, "not_found", "no such file")
        return _results_of(job, state.files.get(job.file_id), view["completed"] + view["failed"])

    async def image(request: Request) -> Response:
        found = _finished(request)
        i = request.path_params["index"]
        if found is None or not i.isdigit() or int(i) >= found[2] or int(i) in found[0].fail_at:
            return _error(404, "not_found", "not found")
        f = found[1]
        prompt = f.prompts[int(i)] if f and int(i) < len(f.prompts) else ""
        ratio = f.ratios[int(i)] if f and int(i) < len(f.ratios) else "1:1"
        png = await asyncio.to_thread(results.draw, int(i), prompt, ratio)
        return Response(png, media_type="image/png")

    async def sandbox_config(request: Request) -> Response:
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {state.config.token}".encode()):
            return _error(401, "unauthorized", "missing or invalid bearer token")
        if request.method == "POST":
            data = await body(request)
            if isinstance(data, Response):
                return data
            known = {f.name for f in fields(SandboxConfig)} - {"token"}
            for k, v in data.items():
                if k in known:
                    setattr(state.config, k, v)
            if "balance" in data:
                state.balance = float(data["balance"])
        cfg = asdict(state.config)
        cfg.pop("token")
        return _json(
            {
                "config": cfg,
                "balance": state.balance,
                "requests": state.requests,
                "submits": state.submits,
                "jobs": len(state.jobs),
                "files": len(state.files),
            }
        )

    def styled(kind: str, handler: Any) -> Any:
        """The handler's answer in the configured style (ours unchanged)."""

        async def run(request: Request) -> Response:
            resp = await handler(request)
            style = state.config.style
            if style not in STYLES or style == "ours" or state.config.envelope:
                return resp
            body = orjson.loads(resp.body)
            if resp.status_code >= 400 and isinstance(body, dict) and isinstance(body.get("error"), dict):
                err = dict(body["error"])
                code, message = str(err.pop("code", "")), str(err.pop("message", ""))
                status, restyled = style_error(style, resp.status_code, code, message, err)
                retry = resp.headers.get("retry-after")
                return _json(restyled, status, {"Retry-After": retry} if retry else None)
            if resp.status_code >= 400:
                return resp
            return _json(style_answer(style, kind, body), resp.status_code)

        return run

    app = Starlette(
        routes=[
            Route("/v1/batch/files:upload", styled("upload", upload), methods=["POST"]),
            Route("/v1/batch/files/{file_id}/content", file_content, methods=["GET"]),
            Route("/v1/batch/jobs:precheck", styled("estimate", precheck), methods=["POST"]),
            Route("/v1/batch/jobs", styled("job", create_job), methods=["POST"]),
            Route("/v1/batch/jobs", styled("list", list_jobs), methods=["GET"]),
            Route("/v1/batch/jobs/{rest}", styled("job", job_route), methods=["GET", "POST"]),
            Route("/sandbox/summaries/{job_id}/{secret}", summary, methods=["GET"]),
            Route("/sandbox/results/{job_id}/{secret}", results_file, methods=["GET"]),
            Route("/sandbox/images/{job_id}/{secret}/{index}.png", image, methods=["GET"]),
            Route("/_sandbox/config", sandbox_config, methods=["GET", "POST"]),
        ],
    )
    app.state.sandbox = state
    app.state.tmp = tmp
    return app
