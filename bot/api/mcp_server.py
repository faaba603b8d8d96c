"""The MCP server (the `mcp` SDK's FastMCP; pinned below 2): the agents' API as tools, over
stdio (`batchjob-bot --mcp`) and streamable HTTP (at /mcp on the API's server).

Over HTTP every call carries `Authorization: Bearer <API key>` (checked per call, from the
call's own request); over stdio the process belongs to whoever started it, with the key in
BATCHJOB_BOT_API_KEY when given (its owner's budgets and approvals), else a local key.
`submit_batch` estimates first and submits only with confirm=true; `job_status` with
`wait_seconds` reports progress notifications while the job runs when the client sent a
progress token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from mcp.server.fastmcp import Context, FastMCP

from batchjob.client import sanitize_filename
from bot.api.http import check_callback
from bot.api.keys import ApiKey
from bot.api.service import Agents, Refused
from bot.api.submissions import TERMINAL

FINISHED = TERMINAL  # a submission in one of these changes no more
MAX_WAIT_S = 600


class ToolError(Exception):
    pass


def build(agents: Agents, stdio_key: ApiKey | None = None, allow_paths: bool = False) -> FastMCP:
    mcp = FastMCP(
        "batchjob-bot",
        instructions="Batch image generation: submit a prompt file (estimate first, then confirm), "
        "follow the job, read the results.",
        stateless_http=True,
        json_response=False,  # SSE: progress notifications go out while a call runs
        streamable_http_path="/mcp",
    )

    async def key_of(ctx: Context) -> ApiKey:
        request = getattr(ctx.request_context, "request", None)
        if request is None:
            if stdio_key is None:
                raise ToolError("unauthorized: no API key")
            return stdio_key
        header = request.headers.get("authorization", "")
        key = (
            await agents.keys.check(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        )
        if key is None:
            raise ToolError("unauthorized: Authorization: Bearer <API key> is required")
        return key

    async def call(coro: Any) -> Any:
        try:
            return await coro
        except Refused as e:
            raise ToolError(f"{e.code}: {e.message}") from None

    def local(path: str) -> Path:
        if not allow_paths:
            raise ToolError("paths are read over stdio only; give url, rows or file_id")
        p = Path(path).expanduser()
        if not p.is_file():
            raise ToolError("no such file")
        return p

    async def source(
        path: str | None, url: str | None, rows: list[dict[str, Any]] | None, file_id: str | None
    ) -> tuple[str, str, str, str]:
        """(kind, ref, name, digest): an upload is saved under the uploads folder and named by
        its SHA-256 for idempotency (the HTTP API does the same)."""
        given = [x for x in (path, url, rows, file_id) if x]
        if len(given) != 1:
            raise ToolError("give exactly one of path, url, rows, file_id")
        if url:
            return "url", url, url.rsplit("/", 1)[-1][:100] or "download", ""
        if file_id:
            return "file_id", file_id, file_id, ""
        name = f"mcp-{secrets.token_hex(8)}"
        if rows:
            if not all(isinstance(r, dict) for r in rows):
                raise ToolError("rows must be objects")
            data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
            await asyncio.to_thread((agents.uploads / f"{name}.jsonl").write_bytes, data)
            return "upload", f"{name}.jsonl", "rows.jsonl", hashlib.sha256(data).hexdigest()
        src = local(path or "")
        if src.stat().st_size > agents.runner.settings.max_download_bytes:
            raise ToolError("the file is too large")
        dest = f"{name}{src.suffix[:10]}"
        digest = await asyncio.to_thread(_copy_hashed, src, agents.uploads / dest)
        return "upload", dest, sanitize_filename(src.name), digest

    @mcp.tool()
    async def submit_batch(
        ctx: Context,
        path: str | None = None,
        url: str | None = None,
        rows: list[dict[str, Any]] | None = None,
        file_id: str | None = None,
        count: int | None = None,
        model: str | None = None,
        mode: str | None = None,
        confirm: bool = False,
        skip_invalid: bool = False,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """Check a prompt file (path over stdio, url, rows inline, or a BatchJob file_id with its
        count), upload it and estimate the cost. Submits only with confirm=true; otherwise the
        submission waits (confirm it with confirm_submission). Same idempotency_key within 24 h:
        the same submission, never a second job."""
        key = await key_of(ctx)
        kind, ref, name, digest = await source(path, url, rows, file_id)
        options: dict[str, Any] = {
            "model": model,
            "mode": mode,
            "confirm": confirm,
            "skip_invalid": skip_invalid,
            "count": count,
            "idempotency_key": idempotency_key,
        }
        if callback_url:
            try:
                options["callback"] = await check_callback(
                    {"url": callback_url}, agents.callbacks.allow_loopback
                )
            except Refused as e:
                raise ToolError(f"{e.code}: {e.message}") from None
        view, _ = await call(agents.submit(key, kind, ref, name, options, digest))
        return view  # type: ignore[no-any-return]

    @mcp.tool()
    async def inspect_file(
        ctx: Context,
        path: str | None = None,
        url: str | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Check a prompt file without submitting anything: the row report and the estimate."""
        key = await key_of(ctx)
        kind, ref, name, digest = await source(path, url, rows, None)
        view, _ = await call(agents.submit(key, kind, ref, name, {"estimate_only": True}, digest))
        return {k: view.get(k) for k in ("report", "estimate", "state", "message")}

    @mcp.tool()
    async def confirm_submission(ctx: Context, submission_id: str) -> dict[str, Any]:
        """Submit a submission that waits at its estimate."""
        return await call(agents.confirm(await key_of(ctx), submission_id))  # type: ignore[no-any-return]

    @mcp.tool()
    async def job_status(ctx: Context, submission_id: str, wait_seconds: int = 0) -> dict[str, Any]:
        """A submission's state, counts and job. With wait_seconds (at most 600), waits for the
        job to finish, with progress notifications when the client asked for them."""
        key = await key_of(ctx)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, min(wait_seconds, MAX_WAIT_S))
        while True:
            view = await call(agents.view(key, submission_id))
            job = view.get("job") or {}
            if job.get("total"):
                done = (job.get("completed") or 0) + (job.get("failed") or 0)
                await ctx.report_progress(done, job["total"], view["state"])
            if view["state"] in FINISHED or loop.time() >= deadline:
                return view  # type: ignore[no-any-return]
            await asyncio.sleep(1.0)

    @mcp.tool()
    async def job_results(ctx: Context, submission_id: str) -> dict[str, Any]:
        """The results of a finished submission: per record, row, outcome, error, image URLs."""
        return await call(agents.results(await key_of(ctx), submission_id))  # type: ignore[no-any-return]

    @mcp.tool()
    async def cancel_job(ctx: Context, submission_id: str) -> dict[str, Any]:
        """Cancel a submission: before its submit (nothing is sent) or its running job."""
        return await call(agents.cancel(await key_of(ctx), submission_id))  # type: ignore[no-any-return]

    @mcp.tool()
    async def list_jobs(ctx: Context, state: str | None = None, cursor: int | None = None) -> dict[str, Any]:
        """This key's submissions, newest first (next_cursor for the next page)."""
        return await call(agents.page(await key_of(ctx), state, cursor, limit=20))  # type: ignore[no-any-return]

    return mcp


def _copy_hashed(src: Path, dest: Path) -> str:
    """Copy a local file in pieces (never whole in memory); its SHA-256."""
    h = hashlib.sha256()
    with src.open("rb") as f, dest.open("wb") as out:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()
