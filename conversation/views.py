"""Answers to /status, /jobs and /details: the service asked, one text back (never raises on
a service failure: the failure is the answer)."""

from __future__ import annotations

import locales
from batchjob import errors as bj
from batchjob import redaction, rowmap
from batchjob.client import BatchJobClient
from conversation.events import ListJobs, ServiceFailed
from conversation.state import ChatState
from conversation.store import Store
from conversation.submission import service_failure
from conversation.texts import status_line

PROMPT_SHOWN = 60  # characters of a failed record's prompt in /details


def failure_text(lang: str, failure: ServiceFailed) -> str:
    return locales.t(lang, f"error.{failure.kind}", message=failure.message, **failure.params)


async def status(client: BatchJobClient, lang: str, state: ChatState, job_id: str | None) -> str:
    # Without an id: the chat's active jobs, else its latest one (ended, but asked about).
    ids = [job_id] if job_id else (state.jobs[-10:] or state.recent[:1])
    if not ids:
        return locales.t(lang, "cmd.status_none")
    lines = []
    for jid in ids:
        try:
            job = await client.get_job(jid)
        except bj.BatchJobError as e:
            return failure_text(lang, service_failure("status", e))
        lines.append(status_line(lang, job))
        if job.output_summary_url and job_id:
            lines.append(locales.t(lang, "job.summary_url", url=job.output_summary_url))
    return "\n".join(lines)


async def job_list(client: BatchJobClient, lang: str, state: ChatState, effect: ListJobs) -> str:
    try:
        if effect.admin:
            page = await client.list_jobs(page=effect.page, page_size=20, status=effect.status)
            jobs, total = page.items, page.total
        else:
            jobs = [await client.get_job(j) for j in state.recent[:10]]
            total = len(state.recent)
    except bj.BatchJobError as e:
        return failure_text(lang, service_failure("list", e))
    if not jobs:
        return locales.t(lang, "cmd.jobs_empty")
    lines = [status_line(lang, j) for j in jobs]
    lines.append(
        locales.t(lang, "cmd.jobs_page", page=effect.page, shown=len(jobs), count=total or len(jobs))
    )
    return "\n".join(lines)


async def details(client: BatchJobClient, store: Store, lang: str, job_id: str) -> str:
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
