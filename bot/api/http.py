"""The agents' HTTP API (Starlette routes, mounted on the bot's ASGI app or served alone).

Every error is `{"error": {"code", "message"}}` with a stable code; a request refused
changes nothing. Auth: `Authorization: Bearer bjk_…`; a key sees only its own submissions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from batchjob.client import sanitize_filename
from batchjob.fetch import FetchError, pinned
from bot.api.keys import ApiKey
from bot.api.openapi import DOCUMENT
from bot.api.service import Agents, Refused

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_METADATA_BYTES = 4096
OPTIONS = {
    "url",
    "file_id",
    "count",
    "rows",
    "model",
    "mode",
    "confirm",
    "estimate_only",
    "skip_invalid",
    "idempotency_key",
    "callback",
    "metadata",
}
BOOLS = ("confirm", "estimate_only", "skip_invalid")


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class TooLarge(Exception):
    pass


def _limited(request: Request, limit: int) -> Request:
    """The request with its body cut at `limit` bytes (TooLarge past it), whatever it declares."""
    seen = 0
    receive = request.receive

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise TooLarge
        return message

    return Request(request.scope, counted)


def _bool(v: Any, name: str) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
        return v.lower() in ("true", "1")
    raise Refused(400, "invalid_field", f"{name} must be true or false")


async def _options(raw: dict[str, Any], allow_loopback: bool) -> dict[str, Any]:
    unknown = set(raw) - OPTIONS
    if unknown:
        raise Refused(400, "unknown_field", f"unknown field: {sorted(unknown)[0][:40]}")
    out: dict[str, Any] = {}
    for name in ("model", "mode", "idempotency_key"):
        v = raw.get(name)
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 200):
            raise Refused(400, "invalid_field", f"{name} must be a string of 1 to 200 characters")
        out[name] = v
    for name in BOOLS:
        out[name] = _bool(raw.get(name), name)
    count = raw.get("count")
    if count is not None:
        if isinstance(count, str) and count.isdigit():
            count = int(count)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= 10_000_000:
            raise Refused(400, "invalid_field", "count must be a positive integer")
        out["count"] = count
    meta = raw.get("metadata")
    if isinstance(meta, str):
        meta = _json_field(meta, "metadata")
    if meta is not None and (not isinstance(meta, dict) or len(json.dumps(meta)) > MAX_METADATA_BYTES):
        raise Refused(
            400, "invalid_field", f"metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
        )
    out["metadata"] = meta
    cb = raw.get("callback")
    if isinstance(cb, str):
        cb = _json_field(cb, "callback")
    out["callback"] = await check_callback(cb, allow_loopback) if cb is not None else None
    return out


def _json_field(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise Refused(400, "invalid_field", f"{name} must be JSON") from None


async def check_callback(cb: Any, allow_loopback: bool) -> dict[str, Any]:
    if not isinstance(cb, dict):
        raise Refused(
            400,
            "invalid_callback",
            "callback must be an object: {url} or {openclaw: {url, token, session_key?, agent_id?}}",
        )
    if "openclaw" in cb:
        oc = cb["openclaw"]
        optional = ("session_key", "agent_id")
        if (
            not isinstance(oc, dict)
            or set(oc) - {"url", "token", *optional}
            or not all(isinstance(oc.get(k), str) and 0 < len(oc[k]) <= 500 for k in ("url", "token"))
            or not all(isinstance(oc[k], str) and len(oc[k]) <= 200 for k in optional if k in oc)
        ):
            raise Refused(
                400,
                "invalid_callback",
                "openclaw needs url and token (strings); session_key, agent_id optional",
            )
        url = oc["url"]
        target: dict[str, Any] = {"openclaw": {k: str(v) for k, v in oc.items()}}
    else:
        if set(cb) != {"url"} or not isinstance(cb["url"], str) or len(cb["url"]) > 2000:
            raise Refused(400, "invalid_callback", 'callback must be {"url": "https://…"}')
        url, target = cb["url"], {"url": cb["url"]}
    try:
        await pinned(url, allow_loopback)
    except FetchError:
        raise Refused(
            400, "callback_refused", "the callback URL must be http(s) on a public address"
        ) from None
    return target


def routes(agents: Agents, max_upload_bytes: int) -> list[Route]:
    allow_loopback = agents.runner.settings.unsafe_allow_loopback_urls

    async def auth(request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise Refused(401, "unauthorized", "Authorization: Bearer <API key> is required")
        key = await agents.keys.check(header[len("Bearer ") :])
        if key is None:
            raise Refused(401, "unauthorized", "the API key is not valid (or revoked)")
        return key

    def handler(fn: Any) -> Any:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except Refused as e:
                return error(e.status, e.code, e.message)
            except TooLarge:
                return error(413, "too_large", "the request body is too large")

        return wrapped

    async def create(request: Request) -> Response:
        key = await auth(request)
        kind_of = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind_of == "multipart/form-data":
            return await _multipart(key, request)
        if kind_of != "application/json":
            raise Refused(415, "unsupported_media_type", "send application/json or multipart/form-data")
        body = b""
        async for chunk in _limited(request, MAX_JSON_BYTES).stream():
            body += chunk
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Refused(400, "invalid_json", "the body is not JSON") from None
        if not isinstance(raw, dict):
            raise Refused(400, "invalid_json", "the body must be a JSON object")
        options = await _options(raw, allow_loopback)
        given = [k for k in ("url", "file_id", "rows") if raw.get(k) is not None]
        if len(given) != 1:
            raise Refused(400, "invalid_input", "give exactly one of url, file_id, rows (or upload a file)")
        if given == ["url"]:
            if not isinstance(raw["url"], str) or len(raw["url"]) > 2000:
                raise Refused(400, "invalid_field", "url must be a string")
            name = raw["url"].rsplit("/", 1)[-1][:100] or "download"
            return await _accepted(key, "url", raw["url"], name, options)
        if given == ["file_id"]:
            if (
                not isinstance(raw["file_id"], str)
                or not 0 < len(raw["file_id"]) <= 200
                or not options.get("count")
            ):
                raise Refused(400, "invalid_input", "file_id needs its record count (count)")
            return await _accepted(key, "file_id", raw["file_id"], raw["file_id"], options)
        rows = raw["rows"]
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise Refused(400, "invalid_field", "rows must be a non-empty list of objects")
        name = f"rows-{secrets.token_hex(8)}.jsonl"
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        (agents.uploads / name).write_bytes(data)
        return await _accepted(key, "upload", name, "rows.jsonl", options, hashlib.sha256(data).hexdigest())

    async def _multipart(key: ApiKey, request: Request) -> Response:
        limited = _limited(request, max_upload_bytes + 64 * 1024)
        async with limited.form(max_files=1, max_fields=len(OPTIONS)) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise Refused(400, "invalid_input", "multipart needs a file field named file")
            raw = {k: v for k, v in form.items() if k != "file"}
            options = await _options(raw, allow_loopback)
            filename = sanitize_filename(upload.filename or "upload")
            name = f"up-{secrets.token_hex(8)}{Path(filename).suffix[:10]}"
            digest = hashlib.sha256()
            size = 0
            with (agents.uploads / name).open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        out.close()
                        (agents.uploads / name).unlink(missing_ok=True)
                        raise TooLarge
                    digest.update(chunk)
                    out.write(chunk)
        return await _accepted(key, "upload", name, filename, options, digest.hexdigest())

    async def _accepted(
        key: ApiKey, kind: str, ref: str, name: str, options: dict[str, Any], digest: str = ""
    ) -> Response:
        view, new = await agents.submit(key, kind, ref, name, options, digest)  # removes the upload
        return JSONResponse(view, status_code=202 if new else 200)

    async def one(request: Request) -> Response:
        key = await auth(request)
        view = await agents.view(key, request.path_params["sub"])
        if request.query_params.get("include") == "results" and view["state"] in (
            "completed",
            "partially_completed",
            "failed",
            "cancelled",
        ):
            view["results"] = await agents.results(key, view["id"])
        return JSONResponse(view)

    async def listing(request: Request) -> Response:
        key = await auth(request)
        state = request.query_params.get("state") or None
        cursor = request.query_params.get("cursor")
        if cursor is not None and not cursor.isdigit():
            raise Refused(400, "invalid_cursor", "cursor must be the next_cursor of a previous page")
        return JSONResponse(await agents.page(key, state, int(cursor) if cursor else None))

    async def confirm(request: Request) -> Response:
        key = await auth(request)
        return JSONResponse(await agents.confirm(key, request.path_params["sub"]))

    async def cancel(request: Request) -> Response:
        key = await auth(request)
        return JSONResponse(await agents.cancel(key, request.path_params["sub"]))

    async def results(request: Request) -> Response:
        key = await auth(request)
        return JSONResponse(await agents.results(key, request.path_params["sub"]))

    async def image(request: Request) -> Response:
        key = await auth(request)
        record, n = request.path_params["record"], request.path_params["n"]
        path, mime = await agents.image(key, request.path_params["sub"], record, n)

        def remove() -> None:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()

        return FileResponse(path, media_type=mime, background=BackgroundTask(remove))

    async def openapi(request: Request) -> Response:
        return JSONResponse(DOCUMENT)

    return [
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        Route("/v1/submissions", handler(create), methods=["POST"]),
        Route("/v1/submissions", handler(listing), methods=["GET"]),
        Route("/v1/submissions/{sub}", handler(one), methods=["GET"]),
        Route("/v1/submissions/{sub}/confirm", handler(confirm), methods=["POST"]),
        Route("/v1/submissions/{sub}/cancel", handler(cancel), methods=["POST"]),
        Route("/v1/submissions/{sub}/results", handler(results), methods=["GET"]),
        Route("/v1/submissions/{sub}/results/{record:int}/{n:int}", handler(image), methods=["GET"]),
    ]
