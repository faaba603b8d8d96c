"""What agents can do, whatever carries their calls (the HTTP API, MCP): submit, look, confirm,
cancel, list. Each submission is a chat of its own in the conversation app: the same steps,
checks, budgets, approvals, watcher and results as a person's file."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from batchjob import errors as bj
from batchjob import results, rowmap
from bot.api.callbacks import Callbacks
from bot.api.channel import ApiChannel
from bot.api.keys import ApiKey, ApiKeys
from bot.api.submissions import TERMINAL, Submissions, chat_of, new_id
from conversation import identity
from conversation.app import ConversationApp
from conversation.events import ButtonPressed, CommandReceived, Effect, Event, InputGiven
from conversation.state import ChatState

log = logging.getLogger("bot.api")


# States that speak for themselves: the chat's words (which ask a person to press a button)
# would only confuse an agent.
QUIET_STATES = frozenset(
    {"checking", "awaiting_confirmation", "submitting", "submitted", "running", "completed"}
)


class Refused(Exception):
    """An API error with a stable code (the HTTP layer maps it to a status)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def body_hash(fields: dict[str, Any], file_digest: str = "") -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((canonical + file_digest).encode()).hexdigest()


class Agents:
    def __init__(self, app: ConversationApp, channel: ApiChannel, progress_every_s: float = 10.0) -> None:
        self.app = app
        self.runner = app.runner
        self.store = app.store
        self.client = app.client
        r, k = app.store.r, app.keys
        self.keys = ApiKeys(r, k)
        self.subs = Submissions(r, k)
        self.callbacks = Callbacks(r, k, allow_loopback=app.runner.settings.unsafe_allow_loopback_urls)
        self.channel = channel
        channel.agents = self
        self.uploads = channel.uploads
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.progress_every_ms = int(progress_every_s * 1000)
        app.runner.observers.append(self.observe)
        app.finished_hooks.append(self.finished)

    # --- submitting ----------------------------------------------------------------------

    async def submit(
        self,
        key: ApiKey,
        kind: str,
        ref: str,
        filename: str,
        options: dict[str, Any],
        digest: str = "",
    ) -> tuple[dict[str, Any], bool]:
        """(the submission, whether it is new). `options`: model, mode, confirm, estimate_only,
        skip_invalid, count, idempotency_key, callback, metadata. An upload (`ref`, a file the
        caller saved under `uploads`) is removed once read, or refused."""
        try:
            return await self._submit(key, kind, ref, filename, options, digest)
        finally:
            if kind == "upload":
                (self.uploads / ref).unlink(missing_ok=True)

    async def _submit(
        self, key: ApiKey, kind: str, ref: str, filename: str, options: dict[str, Any], digest: str
    ) -> tuple[dict[str, Any], bool]:
        sub_id = new_id()
        idem = options.get("idempotency_key")
        if idem:
            # An upload is named by its content (digest) and name, not by where it was saved.
            source = filename if kind == "upload" else ref
            fields = {k: v for k, v in options.items() if k != "idempotency_key"} | {
                "kind": kind,
                "source": source,
            }
            this = body_hash(fields, digest)
            first = await self.subs.claim_idempotency(key.id, idem, this, sub_id)
            if first is not None:
                first_hash, first_id = first
                if first_hash != this:
                    raise Refused(
                        409, "idempotency_conflict", "this idempotency_key was used with another body"
                    )
                return await self.view(key, first_id, wait_created=True), False
        confirm = options.get("confirm")
        confirm = key.confirm if confirm is None else bool(confirm)
        await self.subs.create(
            sub_id,
            key.id,
            key.user,
            metadata=options.get("metadata") or {},
            callback=options.get("callback") or {},
            filename=filename[:100],
        )
        event = InputGiven(
            kind,
            f"{identity.API}:{ref}" if kind == "upload" else ref,
            filename,
            str(options.get("model") or ""),
            str(options.get("mode") or ""),
            confirm,
            bool(options.get("estimate_only")),
            bool(options.get("skip_invalid")),
            int(options.get("count") or 0),
            key.user,
        )
        await self.runner.handle(chat_of(sub_id), event, default_lang="en")
        return await self.view(key, sub_id), True

    async def confirm(self, key: ApiKey, sub_id: str) -> dict[str, Any]:
        await self._own(key, sub_id)
        state = await self.store.load(chat_of(sub_id))
        p = state.pending
        if p is None or state.phase not in ("awaiting_confirm", "awaiting_fix"):
            raise Refused(
                409, "not_awaiting_confirmation", "the submission is not waiting for a confirmation"
            )
        action = "valid" if state.phase == "awaiting_fix" else "go"
        await self.runner.handle(chat_of(sub_id), ButtonPressed(f"c:{action}:{p.token}", key.user))
        return await self.view(key, sub_id)

    async def cancel(self, key: ApiKey, sub_id: str) -> dict[str, Any]:
        rec = await self._own(key, sub_id)
        if rec.get("job"):
            try:
                await self.client.cancel(rec["job"], "cancelled by the agent")
            except bj.BatchJobError as e:
                raise Refused(502, "service_error", str(e.message or e.kind)[:300]) from None
        else:
            await self.runner.handle(chat_of(sub_id), CommandReceived("drop", (), key.user))
        return await self.view(key, sub_id)

    # --- reading ---------------------------------------------------------------------------

    async def _own(self, key: ApiKey, sub_id: str) -> dict[str, str]:
        rec = await self.subs.get(sub_id) if sub_id.startswith("sub_") and len(sub_id) <= 40 else {}
        if not rec or rec.get("key") != key.id:
            raise Refused(404, "not_found", "no such submission")  # another key's is not found either
        return rec

    async def view(self, key: ApiKey, sub_id: str, wait_created: bool = False) -> dict[str, Any]:
        try:
            rec = await self._own(key, sub_id)
        except Refused:
            if wait_created:  # a concurrent first request is still creating it
                return {"id": sub_id, "state": "accepted"}
            raise
        out: dict[str, Any] = {
            "id": sub_id,
            "state": rec.get("state", "checking"),
            "created_ms": int(rec.get("created") or 0),
            "report": json.loads(rec["report"]) if rec.get("report") else None,
            "estimate": json.loads(rec["estimate"]) if rec.get("estimate") else None,
            "metadata": json.loads(rec.get("metadata") or "{}"),
            "message": None,
            "job": None,
        }
        job_id = rec.get("job")
        if job_id:
            out["job"], out["state"] = await self._job(job_id)
        if out["state"] not in QUIET_STATES:
            out["message"] = rec.get("message") or None  # why it stopped, in words
        return out

    async def _job(self, job_id: str) -> tuple[dict[str, Any], str]:
        try:
            job = await self.client.get_job(job_id)
        except bj.BatchJobError:
            rec = await self.store.job(job_id)
            return {"id": job_id, "status": rec.get("status") or "unknown"}, "running"
        info = {
            "id": job_id,
            "status": job.status,
            "total": job.total,
            "completed": job.completed,
            "failed": job.failed,
            "progress": job.fraction,
            "finished_at": job.finished_at,
        }
        if not job.terminal:
            fraction, started = job.fraction, job.created_ms
            if fraction and 0 < fraction < 1 and started:  # at the pace so far
                elapsed = max(0.0, time.time() - started / 1000)
                info["eta_seconds"] = round(elapsed / fraction * (1 - fraction))
            return info, "running" if job.state != "queued" else "submitted"
        if job.state == "completed":
            return info, "completed" if not job.failed else "partially_completed"
        return info, "cancelled" if job.state == "cancelled" else "failed"

    async def _results_file(self, key: ApiKey, sub_id: str) -> tuple[Path, list[tuple[int, int]], str]:
        """The finished job's results on disk (downloaded once, kept beside the media until
        the media sweep), the row map, the job id."""
        rec = await self._own(key, sub_id)
        if not rec.get("job"):
            raise Refused(409, "no_job", "the submission has no job (yet)")
        try:
            job = await self.client.get_job(rec["job"])
        except bj.BatchJobError as e:
            raise Refused(502, "service_error", str(e.message or e.kind)[:300]) from None
        if not job.terminal:
            raise Refused(409, "not_finished", "the job has not finished yet")
        runs = rowmap.decode((await self.store.job(job.job_id)).get("rows", ""))
        kept = self.runner.media / f"results-{sub_id}.doc"
        if not kept.is_file():
            work = self.runner.media / f"results-{sub_id}.{secrets.token_hex(4)}"
            path = await results.download(
                self.client,
                job,
                work,
                self.result_limits,
                allow_loopback=self.runner.settings.unsafe_allow_loopback_urls,
            )
            if path is None:
                raise Refused(404, "no_results", "the service keeps no results for this job")
            path.replace(kept)
        return kept, runs, job.job_id

    @property
    def result_limits(self) -> results.ResultLimits:
        return results.ResultLimits(max_document_bytes=self.runner.settings.results_max_bytes)

    async def results(self, key: ApiKey, sub_id: str, limit: int = 1000) -> dict[str, Any]:
        """The manifest of a finished submission's results: per record, the user's row, the
        outcome, the error, its images (the service's URLs; inline ones as this API's URLs).
        Read from disk record by record: never the whole document in memory."""
        path, runs, job_id = await self._results_file(key, sub_id)
        items: list[dict[str, Any]] = []
        decoder = results.Decoder(self.runner.media, self.result_limits, window=(0, 0))  # count, not decode
        for o in results.records(path, self.result_limits, decoder):
            if len(items) >= limit:
                break
            urls, n = [], 0
            for image in o.images():
                if image.kind == "image_url":
                    urls.append(image.value)
                else:
                    n += 1
                    urls.append(f"/v1/submissions/{sub_id}/results/{o.record}/{n}")
            row = rowmap.row_of(runs, o.record) or (o.record + 1)
            items.append(
                {"record": o.record, "row": row, "status": o.status, "error": o.error or None, "images": urls}
            )
        return {"id": sub_id, "job": job_id, "records": items, "truncated": len(items) >= limit}

    async def image(self, key: ApiKey, sub_id: str, record: int, n: int) -> tuple[Path, str]:
        """One inline image of the results, decoded to a file of its own (streamed from there)."""
        path, _, _ = await self._results_file(key, sub_id)
        out = self.runner.media / f"img-{secrets.token_hex(8)}"
        out.mkdir(mode=0o700)
        decoder = _OneImage(out, self.result_limits, (record, n))
        for o in results.records(path, self.result_limits, decoder):
            if o.record == record:
                for image in o.images():
                    if image.kind == "image_file":
                        return Path(image.value), image.mime
        raise Refused(404, "not_found", "no such image")

    async def page(
        self, key: ApiKey, state: str | None, cursor: int | None, limit: int = 50
    ) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        before = cursor
        while len(items) < limit:
            got = await self.subs.page(key.id, before, limit)
            if not got:
                before = None
                break
            for sub_id, created in got:
                before = created
                v = await self.view(key, sub_id)
                if state is None or v["state"] == state:
                    items.append(v)
                if len(items) >= limit:
                    break
            if len(got) < limit:
                before = None if len(items) < limit else before
                break
        return {"items": items, "next_cursor": before}

    # --- following the chat's steps --------------------------------------------------------

    async def observe(self, chat_id: str, event: Event, state: ChatState, effects: list[Effect]) -> None:
        if identity.channel_of(chat_id) != identity.API:
            return
        sub_id = identity.native(chat_id)
        changes = self.subs.changes(state, event, effects)
        if not changes:
            return
        new_state = changes.pop("phase_state", None) or changes.get("outcome")
        if "job" in changes:
            new_state = "submitted"
        rec = await self.subs.get(sub_id)
        if new_state:
            changes["state"] = new_state
        await self.subs.set(sub_id, **changes)
        if (
            new_state
            and new_state != rec.get("state")
            and new_state in ("awaiting_confirmation", "awaiting_approval", "submitted", "invalid", *TERMINAL)
        ):
            await self._notify(sub_id, rec, new_state)

    async def said(self, sub_id: str, text: str) -> None:
        await self.subs.set(sub_id, message=text[:2000])

    async def progressed(self, sub_id: str) -> None:
        rec = await self.subs.get(sub_id)
        now = int(time.time() * 1000)
        if rec and now - int(rec.get("progress_ms") or 0) >= self.progress_every_ms:
            await self.subs.set(sub_id, progress_ms=now)
            await self._notify(sub_id, rec, "progress")

    async def finished(self, chat_id: str, job_id: str) -> None:
        if identity.channel_of(chat_id) == identity.API:
            sub_id = identity.native(chat_id)
            rec = await self.subs.get(sub_id)
            if rec:
                await self._notify(sub_id, rec, "terminal")

    async def _notify(self, sub_id: str, rec: dict[str, str], kind: str) -> None:
        target = json.loads(rec.get("callback") or "{}")
        if not target:
            return
        key = await self.keys.get(rec.get("key", ""))
        if key is None:
            return
        view = await self.view(key, sub_id)
        if kind != "terminal" and "openclaw" in target:
            return  # the agent's session hears of the end only
        view["event"] = kind  # a state it moved to, "progress" or "terminal"
        # Deliveries may arrive out of order (retries, several senders): numbered per submission.
        view["sequence"] = await self.subs.r.hincrby(self.subs.key(sub_id), "cb_seq", 1)
        if kind == "terminal":
            view["summary_text"] = _summary(view)
        await self.callbacks.enqueue(target, view, key.webhook_secret)


def _summary(view: dict[str, Any]) -> str:
    job = view.get("job") or {}
    return (
        f"Batch submission {view['id']} ended: {view['state']}. "
        f"{job.get('completed') or 0} of {job.get('total') or '?'} records done, "
        f"{job.get('failed') or 0} failed. "
        f"Results: GET /v1/submissions/{view['id']}/results"
    )


class _OneImage(results.Decoder):
    """Decodes one inline image (record, n) of a results file; skips the others unread."""

    def __init__(self, out: Path, limits: results.ResultLimits, want: tuple[int, int]) -> None:
        super().__init__(out, limits)
        self.want = want

    def image(self, record: int, n: int, data: str) -> results.Output | None:
        if (record, n) != self.want:
            return results.Output("image_skipped", "")
        return super().image(record, n, data)
