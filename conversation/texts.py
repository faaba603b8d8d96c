"""Progress, summary and status texts (pure: a job and a language in, a sentence out)."""

from __future__ import annotations

import locales
from batchjob.models import Job
from batchjob.shapes import TERMINAL

BAR_WIDTH = 20


def status(lang: str, job: Job) -> str:
    return locales.status_name(lang, job.state, job.status)


def bar(fraction: float | None) -> str:
    f = min(1.0, max(0.0, fraction or 0.0))
    full = round(f * BAR_WIDTH)
    return "█" * full + "░" * (BAR_WIDTH - full)


def job_buttons(lang: str, job_id: str) -> list[list[tuple[str, str]]]:
    """The buttons under a job's progress message (refresh, details, cancel)."""
    return [
        [
            (locales.t(lang, "btn.refresh"), f"j:r:{job_id}"),
            (locales.t(lang, "btn.details"), f"j:d:{job_id}"),
            (locales.t(lang, "btn.cancel"), f"j:x:{job_id}"),
        ]
    ]


def summary_buttons(lang: str, job: Job) -> list[list[tuple[str, str]]] | None:
    """Under a summary: the results, and the failed rows when some failed (asked for, never
    fetched before)."""
    row = []
    if job.completed or job.failed:
        row.append((locales.t(lang, "btn.results"), f"j:o:{job.job_id}"))
    rows = [row] if row else []
    if job.failed:
        row.append((locales.t(lang, "btn.failed_rows"), f"j:f:{job.job_id}"))
        rows.append([(locales.t(lang, "btn.rerun_failed"), f"j:a:{job.job_id}")])
    return rows or None


def progress(lang: str, job: Job, elapsed_s: float, total_hint: int | None = None) -> str:
    total = job.total if job.total is not None else total_hint
    done = job.processed
    fraction = job.fraction
    if fraction is None and total and done is not None:
        fraction = done / total
    eta = ""
    # No time left to show once the job stops (cancelling) or has ended.
    if fraction and 0 < fraction < 1 and elapsed_s > 0 and job.state not in ("cancelling", *TERMINAL):
        eta = locales.t(lang, "job.eta", eta=locales.duration(lang, elapsed_s * (1 - fraction) / fraction))
    return locales.t(
        lang,
        "job.progress",
        job_id=job.job_id,
        status=status(lang, job),
        bar=bar(fraction),
        percent=int((fraction or 0) * 100),
        done=done if done is not None else "?",
        total=total if total is not None else "?",
        failed=job.failed or 0,
        elapsed=locales.duration(lang, elapsed_s),
        eta=eta,
    )


def summary(lang: str, job: Job, elapsed_s: float, total_hint: int | None = None) -> str:
    total = job.total if job.total is not None else total_hint
    text = locales.t(
        lang,
        "job.summary",
        job_id=job.job_id,
        status=status(lang, job),
        completed=job.completed if job.completed is not None else "?",
        failed=job.failed or 0,
        total=total if total is not None else "?",
        duration=locales.duration(lang, elapsed_s),
    )
    not_run = (total or 0) - (job.completed or 0) - (job.failed or 0)
    if job.terminal and total and job.completed is not None and not_run > 0:
        # Cancelled or expired early: every record is counted, the ones that never ran too.
        text += "\n" + locales.t(lang, "job.summary_not_run", count=not_run)
    if job.output_summary_url:
        text += "\n" + locales.t(lang, "job.summary_url", url=job.output_summary_url)
    return text


def status_line(lang: str, job: Job) -> str:
    return locales.t(
        lang,
        "job.status_line",
        job_id=job.job_id,
        status=status(lang, job),
        done=job.processed if job.processed is not None else "?",
        total=job.total if job.total is not None else "?",
        failed=job.failed or 0,
    )
