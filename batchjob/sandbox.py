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
import contextlib
import hmac
import itertools
import random
import secrets
import socket
import tempfile
import threading
import time
from bisect import bisect_right
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from batchjob import sandbox_results as results
from batchjob.errors import CONTENTS_REQUIRED, NO_VALID_DATA_ROWS, UNSUPPORTED_FILE_TYPE, UNSUPPORTED_SCHEMA
from batchjob.input import Limits, pipeline
from batchjob.input.isolation import convert_file
from batchjob.input.validate import prompt_of
from batchjob.sandbox_styles import STYLES
from batchjob.sandbox_styles import answer as style_answer
from batchjob.sandbox_styles import error as style_error

ACCEPTED_EXTENSIONS = (".jsonl", ".csv", ".tsv", ".txt", ".xlsx", ".xls", ".ods")
_SCHEMA_CODES = {"no_prompt_column", "unknown_line_schema"}
_TYPE_CODES = {
    "unsupported_file_type",
    "encoding_unknown",
    "spreadsheet_unreadable",
    "csv_malformed",
    "file_empty",
}


@dataclass
class SandboxConfig:
    token: str = "sandbox-token"
    balance: float = 1000.0
    price_per_record: dict[str, float] = field(default_factory=lambda: {"fast": 0.02, "standard": 0.04})
    default_price: float = 0.03
    records_per_second: float = 20.0
    queue_seconds: float = 0.5
    fail_marker: str = "[fail]"
    latency: float = 0.0  # seconds added to every API request
    error_rate: float = 0.0  # share of API requests answered 503
    rate_limit_every: int = 0  # every Nth API request answered 429
    retry_after: float = 1.0
    drop_submit_replies: int = 0  # the next N submits create the job, then never answer
    drop_seconds: float = 60.0
    envelope: bool = False  # wrap answers in {"data": ...}
    style: str = "ours"  # answer shapes: ours | envelope | camel (batchjob/sandbox_styles.py)
    results_file: bool = True  # jobs name a results file (images inline); off: the summary only (URLs)
    results_file_id: bool = False  # jobs name their results file by id only (`result_file_id`)
    topup_url: str = ""  # a short balance names this page to top up at (precheck and 402)
    # Uploads read in this process, not the isolated parse worker: only for a stand-in on
    # the bot's own machine reading what the bot wrote (bench/e2e), whose forked readers
    # would otherwise take a third of the two cores the bot is measured on.
    read_in_process: bool = False

    def price(self, model: str, mode: str) -> float:
        return self.price_per_record.get(
            f"{model}:{mode}", self.price_per_record.get(mode, self.default_price)
        )


@dataclass
class _File:
    file_id: str
    filename: str
    mode: str
    row_count: int
    fail_at: list[int]  # sorted indexes of records that will fail
    prompts: list[str]
    created_at: str
    ratios: list[str] = field(default_factory=list)  # each record's aspect ratio (its image's shape)


@dataclass
class _Job:
    job_id: str
    file_id: str
    model: str
    mode: str
    total: int
    fail_at: list[int]
    created: float
    created_at: str
    summary_secret: str
    cancelled: tuple[int, int, float] | None = None  # (completed, failed, at) when cancelled
    reason: str | None = None


class SandboxState:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.balance = config.balance
        self.files: dict[str, _File] = {}
        self.jobs: dict[str, _Job] = {}
        self.requests = 0
        self.submits = 0  # POST /v1/batch/jobs received (for exactly-once checks)
        self.lock = threading.Lock()
        self.clock = time.monotonic

    def view(self, job: _Job, base: str) -> dict[str, Any]:
        now = self.clock()
        cfg = self.config
        if job.cancelled is not None:
            completed, failed, at = job.cancelled
            status, finished = "cancelled", at
        else:
            elapsed = now - job.created
            processed = (
                0
                if elapsed < cfg.queue_seconds
                else int((elapsed - cfg.queue_seconds) * cfg.records_per_second)
            )
            processed = min(job.total, processed)
            failed = bisect_right(job.fail_at, processed - 1)
            completed = processed - failed
            finished = None
            if elapsed < cfg.queue_seconds:
                status = "queued"
            elif processed < job.total:
                status = "running"
            else:
                status = "completed" if failed == 0 else ("failed" if completed == 0 else "partially_failed")
                finished = job.created + cfg.queue_seconds + job.total / cfg.records_per_second
        wall = time.time() - (now - finished) if finished is not None else None
        return {
            "job_id": job.job_id,
            "status": status,
            "file_id": job.file_id,
            "model": job.model,
            "mode": job.mode,
            "total": job.total,
            "completed": completed,
            "failed": failed,
            "progress": round(100 * (completed + failed) / job.total, 2) if job.total else 100.0,
            "created_at": job.created_at,
            "finished_at": _iso(wall, "milliseconds") if wall is not None else None,
            "output_summary_url": (
                f"{base}/sandbox/summaries/{job.job_id}/{job.summary_secret}"
                if status in ("completed", "failed", "partially_failed", "cancelled")
                else None
            ),
            # The records' outputs, images inline (a results file, as Vertex batch jobs write).
            "output_file_url": (
                f"{base}/sandbox/results/{job.job_id}/{job.summary_secret}"
                if cfg.results_file
                and not cfg.results_file_id
                and status in ("completed", "failed", "partially_failed", "cancelled")
                else None
            ),
            "result_file_id": (
                f"res_{job.job_id}"
                if cfg.results_file_id and status in ("completed", "failed", "partially_failed", "cancelled")
                else None
            ),
        }


def _iso(ts: float | None = None, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec=timespec)


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
            rejected = _first_line_check(first)
            if rejected:
                return rejected
        result = await asyncio.to_thread(_normalize, raw, ext, Path(tmp.name))
        if isinstance(result, Response):
            return result
        prompts, fail_at, ratios = result
        f = _File(
            file_id="file_" + secrets.token_hex(8),
            filename=filename,
            mode=str(mode),
            row_count=len(prompts),
            fail_at=fail_at,
            prompts=prompts,
            created_at=_iso(),
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

    def _normalize(raw: bytes, ext: str, workdir: Path) -> tuple[list[str], list[int]] | Response:
        src = workdir / (secrets.token_hex(8) + ext)
        out = workdir / (secrets.token_hex(8) + ".jsonl")
        src.write_bytes(raw)
        try:
            read = pipeline.convert_file if state.config.read_in_process else convert_file
            report = read(src, out, skip_invalid=True, limits=Limits())
            if report.fatal is not None:
                code = report.fatal.code
                if code == "openai_batch_format":
                    return _error(400, "unsupported_schema", CONTENTS_REQUIRED)
                if code in _SCHEMA_CODES:
                    return _error(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
                if code in _TYPE_CODES:
                    return _error(400, "unsupported_file_type", UNSUPPORTED_FILE_TYPE)
                if code.startswith("limit_"):
                    limit = code.removeprefix("limit_")
                    return _error(413, "file_too_large", f"file exceeds a limit ({limit})")
                return _error(400, "no_valid_data_rows", NO_VALID_DATA_ROWS)
            if report.valid == 0:
                if (
                    report.kind is None
                    and report.errors
                    and all(e.code == "unknown_line_schema" for e in report.errors)
                ):
                    return _error(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
                return _error(400, "no_valid_data_rows", NO_VALID_DATA_ROWS)
            marker = state.config.fail_marker
            prompts, fail_at, ratios = [], [], []
            with open(out, "rb") as f:
                for i, line in enumerate(f):
                    parsed = orjson.loads(line)
                    text = prompt_of(parsed)
                    prompts.append(text[:200])
                    ratios.append(results.ratio_of(parsed))
                    if marker and marker in text:
                        fail_at.append(i)
            return prompts, fail_at, ratios
        finally:
            src.unlink(missing_ok=True)
            out.unlink(missing_ok=True)

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
            job = _Job(
                job_id="job_" + secrets.token_hex(8),
                file_id=f.file_id,
                model=model,
                mode=mode,
                total=f.row_count,
                fail_at=f.fail_at,
                created=state.clock(),
                created_at=_iso(),
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

    def _finished(request: Request) -> tuple[_Job, _File | None, int] | None:
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

    def _results_of(job: _Job, f: _File | None, processed: int) -> Response:
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


def _first_line_check(first: bytes) -> Response | None:
    """The service's own check of a JSONL file's first line."""
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        return _error(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
    if not isinstance(obj, dict):
        return _error(400, "unsupported_schema", UNSUPPORTED_SCHEMA)
    if "contents" in obj:
        return None
    if any(k in obj for k in ("method", "url", "body")):
        return _error(400, "unsupported_schema", CONTENTS_REQUIRED)
    if "prompt" in obj:
        return None
    return _error(400, "unsupported_schema", UNSUPPORTED_SCHEMA)


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound TCP socket for uvicorn's `sockets=`. Made with IPPROTO_TCP spelled out: its
    connections inherit the protocol number, and asyncio turns Nagle's algorithm off only on
    sockets that report it. With proto 0, every answer after the first on a kept connection
    waited ~40 ms for the peer's delayed ACK (uvicorn issue #3149) - a server that does not
    answer as Telegram's or the service's front ends do."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


class SandboxServer:
    """The sandbox on a free port of 127.0.0.1, in a background thread (tests, demos)."""

    _ids = itertools.count()

    def __init__(self, config: SandboxConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = create_app(config)
        self.sock = listening_socket(host, port)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        )
        self.thread = threading.Thread(target=self._run, name=f"sandbox-{next(self._ids)}", daemon=True)

    @property
    def state(self) -> SandboxState:
        return self.app.state.sandbox

    def _run(self) -> None:
        self.server.run(sockets=[self.sock])

    def start(self) -> SandboxServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("sandbox did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.app.state.tmp.cleanup()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str, port: int, config: SandboxConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
