"""Exactly one job per confirmation: the submit intent, and reconciling a lost answer."""

from __future__ import annotations

from typing import Any

from batchjob import errors as bj
from batchjob import format_amount, redaction
from batchjob.client import BatchJobClient
from conversation import crash
from conversation.events import Event, Reconciled, RowsKnown, ServiceFailed, Submit, Submitted
from conversation.store import Store

RECONCILE_SKEW_MS = 60_000  # clocks of the bot and the service may differ this much


def service_failure(step: str, e: bj.BatchJobError) -> ServiceFailed:
    kinds = [
        (bj.AuthError, "auth"),
        (bj.InsufficientBalance, "balance"),
        (bj.ValidationError, "validation"),
        (bj.NotFound, "not_found"),
        (bj.Conflict, "conflict"),
        (bj.OutcomeUnknown, "unknown"),
        (bj.Unavailable, "unavailable"),
    ]
    kind = next((k for cls, k in kinds if isinstance(e, cls)), "unavailable")
    params: dict[str, Any] = {}
    if isinstance(e, bj.InsufficientBalance):
        unit = f" {e.currency}" if e.currency else ""
        params = {
            "current": format_amount(e.current) + unit,
            "required": format_amount(e.required) + unit,
            "shortfall": format_amount(e.shortfall) + unit,
            "recharge_url": e.recharge_url or "",
            "numbers": {"current": e.current, "required": e.required, "currency": e.currency or ""},
        }
    # The service's own words, shown to the user: without any secret, and short.
    return ServiceFailed(step, kind, redaction.redact(e.message or e.code or e.kind, 300), params)


async def submit(store: Store, client: BatchJobClient, chat_id: int | str, effect: Submit) -> Event:
    """At most one POST per intent: the intent is recorded as SUBMITTING before it."""
    crash.point("submit.before_intent")
    if not await store.intent_begin(effect.intent_id, chat_id, effect.file_id):
        intent = await store.intent(effect.intent_id)
        state = intent.get(b"state", b"").decode() if intent else ""
        job_id = intent.get(b"job_id", b"").decode() if intent else ""
        if state == "SUBMITTED" and job_id:
            return Submitted(job_id)
        return ServiceFailed("submit", "unknown", "interrupted")
    crash.point("submit.after_intent")
    try:
        job = await client.submit(effect.file_id, effect.model, effect.mode)
    except bj.OutcomeUnknown as e:
        await store.intent_move(effect.intent_id, "SUBMITTING", "UNKNOWN")
        return service_failure("submit", e)
    except bj.BatchJobError as e:
        await store.intent_move(effect.intent_id, "SUBMITTING", "REJECTED")
        return service_failure("submit", e)
    crash.point("submit.after_post")  # the job exists; its id is not recorded anywhere yet
    await store.intent_move(effect.intent_id, "SUBMITTING", "SUBMITTED", job.job_id)
    crash.point("submit.after_record")
    return Submitted(job.job_id, job.status)


LOOKUP_PAGES = 3  # the newest jobs scanned for one on the file (50 per page)


async def rows_of(store: Store, client: BatchJobClient, file_id: str) -> RowsKnown:
    """The record count of a file the user named by id: as this bot counted it at upload,
    else as a job of the service on the same file reports it; else unknown."""
    count = await store.file_rows(file_id)
    if count:
        return RowsKnown(file_id, count, "bot")
    try:
        for page in range(1, LOOKUP_PAGES + 1):
            listed = await client.list_jobs(page=page, page_size=50)
            for job in listed.items:
                if job.file_id == file_id and job.total:
                    await store.remember_file(file_id, job.total)
                    return RowsKnown(file_id, job.total, "job", job.job_id)
            if not listed.items or listed.has_more is False:
                break
    except bj.BatchJobError:
        pass  # the lookup is a courtesy: without it, the file itself is asked for
    return RowsKnown(file_id, None)


async def reconcile(store: Store, client: BatchJobClient, intent_id: str, file_id: str) -> Event:
    """Find the job a lost submit answer would have named: same file, created since the intent.

    The time window keeps an older job of the same file (a file_id can be submitted again
    on purpose) from being adopted by mistake.
    """
    intent = await store.intent(intent_id) if intent_id else {}
    since = int(intent.get(b"created_ms", b"0") or 0) - RECONCILE_SKEW_MS if intent else 0
    try:
        for page in range(1, 4):
            listing = await client.list_jobs(page=page, page_size=50)
            for job in listing.items:
                created = job.created_ms  # ISO, epoch seconds or milliseconds, as the service wrote it
                if job.file_id == file_id and (created is None or created >= since):
                    if intent_id:
                        for state in ("UNKNOWN", "SUBMITTING"):
                            if await store.intent_move(intent_id, state, "SUBMITTED", job.job_id):
                                break
                    return Reconciled(job.job_id)
            if len(listing.items) < 50:
                break
    except bj.BatchJobError:
        pass
    return Reconciled(None)
