"""Answers to /status, /jobs and /details: the service asked, one text back (never raises on
a service failure: the failure is the answer)."""

from __future__ import annotations

from datetime import UTC, datetime

import locales
from batchjob import errors as bj
from batchjob import redaction, rowmap
from batchjob.client import BatchJobClient
from batchjob.models import Job
from conversation.events import ListJobs, ServiceFailed
from conversation.state import ChatState
from conversation.store import Store
from conversation.submission import service_failure
from conversation.texts import status_line

PROMPT_SHOWN = 60  # characters of a failed record's prompt in /details


def failure_text(lang: str, failure: ServiceFailed) -> str:
    return locales.t(lang, f"error.{failure.kind}", message=failure.message, **failure.params)


Buttons = list[list[tuple[str, str]]]
JOBS_PER_PAGE = 10  # a chat's own jobs per /jobs page (the chat keeps its last 20)
OTHERS_SHOWN = 4  # buttons for the chat's other recent jobs under /status and /details


def recent_buttons(lang: str, state: ChatState, shown: str | None, action: str) -> Buttons:
    """One button per other recent job of the chat (j:r status, j:d details)."""
    others = [j for j in state.recent if j != shown][:OTHERS_SHOWN]
    return [[(locales.t(lang, "btn.job", job_id=_short(j)), f"j:{action}:{j}")] for j in others]


def _short(job_id: str) -> str:
    return job_id if len(job_id) <= 20 else "…" + job_id[-12:]


def list_line(lang: str, job: Job, record: dict[str, str]) -> str:
    """A job in /jobs: status and counts, then model and mode, cost and when it started."""
    extra = [" ".join(x for x in (job.model or record.get("model"), job.mode or record.get("mode")) if x)]
    cost = record.get("cost")
    if cost:
        extra.append(locales.t(lang, "job.cost", cost=cost, currency=record.get("currency", "")))
    if job.created_ms:
        extra.append(locales.when(lang, datetime.fromtimestamp(job.created_ms / 1000, UTC)))
    return status_line(lang, job) + "".join(" · " + x for x in extra if x.strip())


async def status(
    client: BatchJobClient, lang: str, state: ChatState, job_id: str | None
) -> tuple[str, Buttons]:
    # Without an id: the chat's active jobs, else its latest one (ended, but asked about).
    ids = [job_id] if job_id else (state.jobs[-10:] or state.recent[:1])
    if not ids:
        return locales.t(lang, "cmd.status_none"), []
    lines = []
    for jid in ids:
        try:
            job = await client.get_job(jid)
        except bj.BatchJobError as e:
            return failure_text(lang, service_failure("status", e)), []
        lines.append(status_line(lang, job))
        if job.output_summary_url and len(ids) == 1:
            lines.append(locales.t(lang, "job.summary_url", url=job.output_summary_url))
    return "\n".join(lines), recent_buttons(lang, state, ids[0] if len(ids) == 1 else None, "r")


async def job_list(
    client: BatchJobClient, store: Store, lang: str, state: ChatState, effect: ListJobs
) -> tuple[str, Buttons]:
    try:
        if effect.admin:  # every job of the service account, by the service's pages
            page = await client.list_jobs(page=effect.page, page_size=JOBS_PER_PAGE, status=effect.status)
            jobs, total = page.items, page.total
            more = page.has_more if page.has_more is not None else len(jobs) == JOBS_PER_PAGE
        else:  # this chat's own jobs
            start = (effect.page - 1) * JOBS_PER_PAGE
            jobs = [await client.get_job(j) for j in state.recent[start : start + JOBS_PER_PAGE]]
            total, more = len(state.recent), start + JOBS_PER_PAGE < len(state.recent)
    except bj.BatchJobError as e:
        return failure_text(lang, service_failure("list", e)), []
    if not jobs:
        if effect.page > 1:
            return locales.t(lang, "cmd.jobs_page_empty", page=effect.page, count=total or 0), []
        return locales.t(lang, "cmd.jobs_empty"), []
    records = await store.jobs_meta([j.job_id for j in jobs])
    lines = [list_line(lang, j, r) for j, r in zip(jobs, records, strict=True)]
    lines.append(
        locales.t(lang, "cmd.jobs_page", page=effect.page, shown=len(jobs), count=total or len(jobs))
    )
    buttons: Buttons = []
    if more:
        buttons.append([(locales.t(lang, "btn.next_page"), f"l:{effect.page + 1}:{effect.status or ''}")])
    return "\n".join(lines), buttons


async def details(
    client: BatchJobClient, store: Store, lang: str, state: ChatState, job_id: str
) -> tuple[str, Buttons]:
    text = await _details(client, store, lang, job_id)
    return text, recent_buttons(lang, state, job_id, "d")


async def _details(client: BatchJobClient, store: Store, lang: str, job_id: str) -> str:
    """Fetch output_summary_url: only here, on the user's explicit request."""
    try:
        job = await client.get_job(job_id)
        if not job.output_summary_url:
            return locales.t(lang, "job.details_unavailable", job_id=job_id)
        summary = await client.fetch_summary(job.output_summary_url)
    except bj.BatchJobError as e:
        return failure_text(lang, service_failure("details", e))
    records = summary.get("records", []) if isinstance(summary, dict) else []
    failed = [r for r in records if isinstance(r, dict) and r.get("status") == "failed"]
    if not failed:
        return locales.t(lang, "job.details_none", job_id=job_id)
    lines = [locales.t(lang, "job.details", job_id=job_id, failed=len(failed), count=len(records))]
    runs = rowmap.decode((await store.job(job_id)).get("rows"))
    for r in failed[:10]:
        error = redaction.redact(str(r.get("error")), 200)
        index = r.get("index") if isinstance(r.get("index"), int) else -1
        prompt = redaction.redact(str(r.get("prompt") or ""), PROMPT_SHOWN).replace("\n", " ")
        row = rowmap.row_of(runs, index)
        if row is not None:
            lines.append(locales.t(lang, "job.details_row", row=row, prompt=prompt or "-", error=error))
        else:  # not sent by this bot (or no map): the line of the file the service got
            line = index + 1 if index >= 0 else "?"
            lines.append(locales.t(lang, "job.details_line", line=line, prompt=prompt or "-", error=error))
    return "\n".join(lines)
