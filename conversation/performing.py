"""Performing a step's effects: messages, downloads, the parse worker, the BatchJob calls,
views and commands. The Runner (conversation/runner.py) saves the steps and calls these;
each effect's outcome comes back as an event for the next step."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import locales
from batchjob import errors as bj
from batchjob import templates
from batchjob.client import BatchJobClient, sanitize_filename
from batchjob.input import Limits, isolation
from conversation import crash, rerun, resolve, submission, texts, views
from conversation.channel import (
    ANSWER,
    FIRST_ANSWER,
    SEND_PRIORITY,
    Buttons,
    Channel,
    DownloadError,
    SendWithdrawn,
)
from conversation.events import (
    Adopt,
    Adopted,
    CancelJob,
    Cleanup,
    Details,
    Download,
    Effect,
    Event,
    FetchUrl,
    FileMissing,
    FileReady,
    Inspect,
    Inspected,
    JobStatus,
    ListJobs,
    LookupRows,
    OpenPath,
    Precheck,
    Prechecked,
    Reconcile,
    Reply,
    RerunFailed,
    ResolveFailed,
    SendTemplates,
    ShowFailed,
    ShowResults,
    Submit,
    Upload,
    Uploaded,
    Watch,
    Whoami,
)
from conversation.identity import channel_of, qualify
from conversation.intake import Intake
from conversation.results_view import ResultsView
from conversation.settings import ConversationSettings
from conversation.spending_events import AskApproval, BudgetCommand, Decide, ShortfallNotice, ShowAudit
from conversation.state import ChatState
from conversation.store import Store
from conversation.submission import service_failure
from conversation.texts import job_buttons

if TYPE_CHECKING:
    from conversation.spending import Spending

_preparing: set[str] = set()


def _prepare_language(lang: str) -> None:
    """Load what `lang`'s estimate will need (Babel's locale data) in a thread while the
    first file is read: the first estimate of a process otherwise loads it on the loop
    (25-50 ms before the first answer of a burst). Not at start: 7 MiB an idle bot need
    not hold."""
    if lang not in _preparing:
        _preparing.add(lang)
        # A future of the executor's, which holds it until done (a task would be held only
        # weakly by the loop); a failure here shows again where the data is used.
        done = asyncio.get_running_loop().run_in_executor(None, locales.prepare, lang)
        done.add_done_callback(lambda f: f.cancelled() or f.exception())


log = logging.getLogger("conversation.runner")


# Taking a file in: a bounded number at a time, the oldest input first (conversation/intake.py).
INTAKE = (Download, FetchUrl, OpenPath, Inspect, Upload, Precheck)


class Performing:
    """The effects half of `Runner` (a mixin: the attributes are the runner's)."""

    store: Store
    client: BatchJobClient
    channel: Channel
    settings: ConversationSettings
    limits: Limits
    media: Path
    results: ResultsView
    spending: Spending
    intakes: dict[str, Intake]

    async def _safe_send(self, chat_id: str, text: str, buttons: Buttons | None = None) -> int | None:
        try:
            sent = await self.channel.send_text(chat_id, text, buttons)
            if SEND_PRIORITY.get() == FIRST_ANSWER:
                SEND_PRIORITY.set(ANSWER)  # answered: the rest can wait behind others' first answers
            return sent
        except SendWithdrawn:
            raise  # another replica took this message over and sends it
        except Exception:  # a failing channel must not take the flow down
            log.exception("send failed for chat %s", chat_id)
            return None

    def render(self, lang: str, reply: Reply) -> tuple[str, Buttons | None]:
        text = "\n".join(locales.t(lang, key, **params) for key, params in reply.parts)
        buttons = [[(locales.t(lang, b.label, **b.params), b.data) for b in row] for row in reply.buttons]
        return text, (buttons or None)

    def _tmp(self, suffix: str) -> Path:
        return self.media / f"{secrets.token_hex(12)}{suffix}"

    def intake_for(self, chat_id: str) -> Intake:
        """The intake of the chat's channel: files are taken in no faster than the answers of
        that channel can leave (the answers waiting for one channel's budget do not hold up
        another's files)."""
        name = channel_of(chat_id)
        if (intake := self.intakes.get(name)) is None:
            ahead = getattr(self.channel, "answers_ahead", None)
            told = None if ahead is None else functools.partial(ahead, chat_id)  # any chat names the channel
            intake = Intake(self.settings.intake_slots, answers_ahead=told)
            self.intakes[name] = intake
        return intake

    async def perform(self, chat_id: str, state: ChatState, effect: Effect) -> Event | None:
        if isinstance(effect, INTAKE) and state.pending is not None:
            async with self.intake_for(chat_id).turn((state.pending.created_ms, state.pending.token)):
                return await self._perform(chat_id, state, effect)
        return await self._perform(chat_id, state, effect)

    async def _perform(self, chat_id: str, state: ChatState, effect: Effect) -> Event | None:
        lang = state.lang
        match effect:
            case Reply():
                text, buttons = self.render(lang, effect)
                await self._safe_send(chat_id, text, buttons)
                if effect.document:
                    await self._send_errors(chat_id, lang, effect.document)
            case Download(ref=ref, filename=filename):
                dest = self._tmp(Path(sanitize_filename(filename)).suffix[:10])
                try:
                    path = await self.channel.download(ref, dest, self.settings.max_download_bytes)
                except DownloadError as e:
                    dest.unlink(missing_ok=True)
                    return ResolveFailed(e.reason)
                return FileReady(str(path), filename)
            case FetchUrl(url=url):
                dest = self._tmp(".download")
                try:
                    path, name = await resolve.fetch_url(
                        url,
                        dest,
                        max_bytes=self.settings.max_download_bytes,
                        timeout_s=self.settings.url_timeout_seconds,
                        allow_loopback=self.settings.unsafe_allow_loopback_urls,
                    )
                except resolve.ResolveError as e:
                    return ResolveFailed(e.reason)
                return FileReady(str(path), name)
            case OpenPath(path=raw):
                dest = self._tmp(".local")
                try:
                    path, name = await asyncio.to_thread(
                        resolve.open_path,
                        raw,
                        list(self.settings.local_path_roots),
                        dest,
                        self.settings.max_download_bytes,
                    )
                except resolve.ResolveError as e:
                    dest.unlink(missing_ok=True)
                    return ResolveFailed(e.reason)
                return FileReady(str(path), name)
            case Inspect(path=path, filename=filename):
                if not Path(path).is_file():
                    return FileMissing("inspect")
                out = self._tmp(".jsonl")
                # Read in the parse worker: a hostile file can end the worker's child, not us.
                worker = isolation.worker()
                reading = worker.submit("convert", path, out, skip_invalid=True, limits=self.limits)
                crash.point("inspect.reading")
                _prepare_language(lang)
                report = await isolation.wait_async(reading, path, self.limits)
                return Inspected(report.to_dict(lang), str(out) if out.exists() else None)
            case Upload(path=path, filename=filename, mode=mode):
                if not path or not Path(path).is_file():
                    return FileMissing("upload")
                name = Path(sanitize_filename(filename)).stem + ".jsonl"
                try:
                    up = await self.client.upload(path, filename=name, mode=mode)
                except bj.BatchJobError as e:
                    return service_failure("upload", e)
                if up.row_count is not None:
                    await self.store.remember_file(up.file_id, up.row_count)
                return Uploaded(up.file_id, up.row_count)
            case Precheck(record_count=n, model=model, mode=mode):
                try:
                    est = await self.client.precheck(n, model, mode)
                except bj.BatchJobError as e:
                    return service_failure("precheck", e)
                if est.sufficient:
                    await self.spending.balance_sufficient()
                return Prechecked(
                    est.model_dump(
                        include={
                            "estimated_cost",
                            "currency",
                            "balance",
                            "sufficient",
                            "required",
                            "recharge_url",
                            "unit_price",
                            "record_count",
                        }
                    )
                )
            case Submit():
                refused = await self.spending.before_submit(chat_id, effect)
                if refused is not None:
                    return refused
                submitted = await submission.submit(self.store, self.client, chat_id, effect)
                await self.spending.after_submit(chat_id, effect, submitted)
                return submitted
            case Reconcile(intent_id=intent_id, file_id=file_id):
                found = await submission.reconcile(self.store, self.client, intent_id, file_id)
                await self.spending.after_reconcile(intent_id, found)
                return found
            case AskApproval() | Decide() | BudgetCommand() | ShowAudit() | ShortfallNotice():
                return await self.spending.perform(chat_id, state, effect)
            case LookupRows(file_id=file_id):
                return await submission.rows_of(self.store, self.client, file_id)
            case Watch(job_id=job_id, intent_id=intent_id, record_count=count, announce=announce):
                msg = None
                if announce is not None:
                    # Sent here, as an answer to the confirmation; the watcher then edits it.
                    text, _ = self.render(lang, announce)
                    msg = await self._safe_send(chat_id, text, job_buttons(lang, job_id))
                    crash.point("watch.after_announce")
                await self.store.add_job(
                    job_id,
                    chat_id,
                    intent=intent_id or "",
                    reservation=self.spending.budgets.taken(intent_id) if intent_id else "",
                    count=count,
                    lang=lang,
                    msg=msg,
                    rows=effect.rows,
                    cost=effect.cost,
                    currency=effect.currency,
                    source=effect.source,
                )
                crash.point("watch.after_add")
            case CancelJob(job_id=job_id, reason=reason):
                try:
                    job = await self.client.cancel(job_id, reason)
                except bj.BatchJobError as e:
                    await self._safe_send(chat_id, views.failure_text(lang, service_failure("cancel", e)))
                    return None
                await self._safe_send(
                    chat_id, locales.t(lang, "cmd.cancelled", job_id=job_id, status=texts.status(lang, job))
                )
            case Whoami(user_id=user_id, admin=admin):
                answer = locales.t(lang, "word.yes" if admin else "word.no")
                await self._safe_send(
                    chat_id,
                    locales.t(lang, "cmd.whoami", user_id=qualify(user_id), chat_id=chat_id, admin=answer),
                )
            case Adopt(job_id=job_id):
                try:
                    job = await self.client.get_job(job_id)
                except bj.NotFound:
                    return Adopted(job_id, False)
                except bj.BatchJobError as e:
                    return service_failure("status", e)
                return Adopted(job.job_id, True, job.total)
            case JobStatus(job_id=job_id):
                await self._safe_send(chat_id, *await views.status(self.client, lang, state, job_id))
            case ListJobs():
                listed = await views.job_list(self.client, self.store, lang, state, effect)
                await self._safe_send(chat_id, *listed)
            case Details(job_id=job_id):
                answer = await views.details(self.client, self.store, lang, state, job_id)
                await self._safe_send(chat_id, *answer)
            case ShowResults(job_id=job_id, page=page):
                await self.results.show(chat_id, lang, job_id, page)
            case ShowFailed(job_id=job_id):
                await self.results.failed(chat_id, lang, job_id)
            case RerunFailed(job_id=job_id):
                return await rerun.failed_rows(self, job_id, self._tmp(".rerun"))
            case SendTemplates():
                await self._safe_send(chat_id, locales.t(lang, "cmd.templates"))
                for kind, name in (
                    ("csv", "prompts.csv"),
                    ("xlsx", "prompts.xlsx"),
                    ("jsonl", "prompts.jsonl"),
                    ("guide", f"guide-{lang}.md"),
                ):
                    await self.channel.send_document(chat_id, name, templates.render(kind, lang))
            case Cleanup(paths=paths):
                # Off the loop: an unlink took 84 ms on a busy disk in a burst (bench/e2e,
                # 1,000 chats), and every chat's sends and their returns waited behind it.
                await asyncio.to_thread(self._remove, paths)
        return None

    def sweep_media(self, now: float | None = None) -> int:
        """Remove received files whose flow ended without cleaning up (crash, expiry)."""
        import time

        limit = (now or time.time()) - self.settings.pending_ttl_seconds - 600
        removed = 0
        for p in self.media.iterdir():
            try:
                if p.is_file() and p.stat().st_mtime < limit:
                    p.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def _remove(self, paths: tuple[str, ...]) -> None:
        """The received files of a flow that ended: only those in the media folder."""
        media = self.media.resolve()
        for raw in paths:
            p = Path(raw)
            try:
                if p.resolve().parent == media:
                    p.unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove %s", p.name)

    async def _send_errors(self, chat_id: str, lang: str, rows: tuple[tuple[str, str, str], ...]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["row", "column", "problem"])
        for row in rows:
            # Cells as text: a leading = + - @ would be a formula in a spreadsheet.
            w.writerow(["'" + c if c[:1] in ("=", "+", "-", "@") else c for c in row])
        await self.channel.send_document(
            chat_id, "row-errors.csv", "\ufeff".encode() + buf.getvalue().encode()
        )
