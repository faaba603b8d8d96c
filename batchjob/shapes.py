"""Reading the service's answers whatever their shape (pure functions, no I/O).

The service's response shapes are not published, so every field is looked for under the
spellings plausible services use (snake_case, camelCase, Google's `JOB_STATE_*`, OpenAI's
`request_counts`, Gemini's `batchStats`, Vertex's `completionStats`, `{code, message, data}`
envelopes, money as objects). Nothing here raises on a strange value: a field that cannot
be read is None, and the caller decides whether the answer is usable. `SPELLINGS` lists
what is accepted for each field (shown by `batchjob doctor` and the docs).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

MAX_DEPTH = 6  # nested objects looked into; deeper ones are ignored

# fmt: off
SPELLINGS: dict[str, tuple[str, ...]] = {
    "file_id": ("file_id", "fileId", "file.id", "id", "name"),
    "row_count": ("row_count", "rowCount", "record_count", "recordCount", "records", "count", "lines"),
    "job_id": ("job_id", "jobId", "batch_id", "batchId", "id", "name"),
    "status": ("status", "state", "job_status", "jobStatus", "job_state", "jobState", "phase"),
    "estimated_cost": (
        "estimated_cost",
        "estimatedCost",
        "estimate",
        "cost",
        "total_cost",
        "totalCost",
        "price.total",
        "amount",
        "estimated_points",
        "points",
    ),
    "unit_price": ("unit_price", "unitPrice", "price_per_record", "pricePerRecord", "price"),
    "balance": (
        "balance",
        "current_balance",
        "currentBalance",
        "balance.current",
        "available",
        "available_balance",
        "availableBalance",
        "remaining",
        "current",
    ),
    "required": (
        "required",
        "required_balance",
        "requiredBalance",
        "required_amount",
        "requiredAmount",
        "need",
    ),
    "shortfall": ("shortfall", "missing", "lack", "deficit", "insufficient_amount"),
    "currency": ("currency", "unit", "currency_code", "currencyCode", "unit_name"),
    "sufficient": ("sufficient", "enough_balance", "enoughBalance", "is_sufficient", "affordable", "ok"),
    "recharge_url": ("recharge_url", "rechargeUrl", "topup_url", "topupUrl", "top_up_url", "billing_url",
                     "checkout_url", "checkoutUrl"),
    "progress": ("progress", "percent", "percentage", "progress_percent", "completion"),
    "counts": (
        "request_counts",
        "requestCounts",
        "stats",
        "counts",
        "batchStats",
        "batch_stats",
        "completionStats",
        "completion_stats",
        "progress",
    ),
    "total": (
        "total",
        "total_count",
        "totalCount",
        "record_count",
        "recordCount",
        "total_records",
        "totalRecords",
        "row_count",
        "requestCount",
        "request_count",
        "total_requests",
    ),
    "completed": (
        "completed",
        "succeeded",
        "success",
        "successful",
        "success_count",
        "successCount",
        "completed_records",
        "completedRecords",
        "successfulRequestCount",
        "successfulCount",
        "succeeded_count",
        "done",
    ),
    "failed": (
        "failed",
        "failure",
        "failures",
        "failed_count",
        "failedCount",
        "failure_count",
        "failed_records",
        "failedRecords",
        "failedRequestCount",
        "errors",
        "error_count",
    ),
    "pending": ("pending", "pending_count", "pendingRequestCount", "incompleteCount", "queued", "waiting"),
    "processing": ("processing", "running", "in_progress", "inProgress", "processingCount"),
    "cancelled": ("cancelled", "canceled", "cancelled_count", "canceledCount"),
    "created_at": ("created_at", "createdAt", "create_time", "createTime", "created", "submitted_at"),
    "finished_at": (
        "finished_at",
        "finishedAt",
        "completed_at",
        "completedAt",
        "end_time",
        "endTime",
        "update_time",
        "updateTime",
    ),
    "output_summary_url": ("output_summary_url", "outputSummaryUrl", "summary_url", "summaryUrl"),
    "result_file_id": ("result_file_id", "resultFileId", "output_file_id", "outputFileId"),
    # A results file named by the job (per-record outputs), where the service has one.
    "results_url": (
        "output_file_url",
        "outputFileUrl",
        "results_url",
        "resultsUrl",
        "result_url",
        "resultUrl",
        "result_file_url",
        "resultFileUrl",
        "output_url",
        "outputUrl",
        "output_uri",
        "outputUri",
    ),
    "items": ("items", "jobs", "list", "records", "results", "data", "batches", "rows"),
    "page_total": ("total", "total_count", "totalCount", "count", "total_size", "totalSize"),
    "has_more": ("has_more", "hasMore", "more"),
    "next": (
        "next_page",
        "nextPage",
        "next_cursor",
        "nextCursor",
        "nextPageToken",
        "next_page_token",
        "cursor",
        "next",
    ),
}

# The service's word for a job's state -> ours. Ours: queued, running, cancelling (not
# terminal), completed, partially_failed, failed, cancelled, expired (terminal), unknown.
STATES: dict[str, tuple[str, ...]] = {
    "queued": (
        "queued",
        "pending",
        "submitted",
        "created",
        "validating",
        "waiting",
        "scheduled",
        "accepted",
        "new",
        "not_started",
        "initializing",
    ),
    "running": (
        "running",
        "in_progress",
        "processing",
        "started",
        "active",
        "executing",
        "finalizing",
        "generating",
        "working",
    ),
    "cancelling": ("cancelling", "canceling", "cancel_requested", "stopping", "aborting"),
    "completed": (
        "completed",
        "complete",
        "succeeded",
        "success",
        "successful",
        "done",
        "finished",
        "ended",
        "ok",
    ),
    "partially_failed": (
        "partially_failed",
        "partially_succeeded",
        "partial",
        "partial_success",
        "partially_completed",
        "completed_with_errors",
    ),
    "failed": ("failed", "failure", "error", "errored"),
    "cancelled": ("cancelled", "canceled", "aborted", "stopped"),
    "expired": ("expired", "timeout", "timed_out"),
}
# fmt: on
_STATE_OF = {word: ours for ours, words in STATES.items() for word in words}
TERMINAL = frozenset({"completed", "partially_failed", "failed", "cancelled", "expired"})


def get(d: Any, path: str) -> Any:
    """d["a"]["b"] for "a.b"; None when any step is missing or not an object."""
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def first(d: Any, field: str) -> Any:
    """The first present, non-null value among the field's spellings."""
    for path in SPELLINGS[field]:
        v = get(d, path)
        if v is not None:
            return v
    return None


def number(v: Any) -> float | None:
    """A finite number from a number or numeric text ("1,234.5", "45%", " 3 "); else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str):
        text = v.strip().replace(",", "").rstrip("%").strip()
        if not text or len(text) > 40:
            return None
        try:
            f = float(text)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def count(v: Any) -> int | None:
    """A non-negative whole count (Gemini sends counts as strings)."""
    f = number(v)
    if f is None or f < 0 or f > 1e15:
        return None
    return int(f)


def money(v: Any, depth: int = 0) -> tuple[float | None, str | None]:
    """(amount, unit) from 1.2, "1.2", {"amount": 1.2, "unit": "credits"}, {"value": …,
    "currency": …}, {"current": {"amount": …}} and the like."""
    n = number(v)
    if n is not None:
        return n, None
    if isinstance(v, dict) and depth < MAX_DEPTH:
        unit = text(first(v, "currency"))
        for key in ("amount", "value", "current", "available", "balance", "total", "points", "quantity"):
            if key in v:
                amount, inner = money(v[key], depth + 1)
                if amount is not None:
                    return amount, inner or unit
    return None, None


def text(v: Any, limit: int = 200) -> str | None:
    if isinstance(v, str):
        return v[:limit]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)[:limit]
    return None


def state_of(word: Any) -> str:
    """Our state for the service's word: `JOB_STATE_SUCCEEDED`, `IN-PROGRESS`, `Canceled`…"""
    if not isinstance(word, str):
        return "unknown"
    w = re.sub(r"[\s-]+", "_", word.strip().lower())
    for prefix in ("job_state_", "batch_state_", "state_", "status_"):
        if w.startswith(prefix):
            w = w[len(prefix) :]
    return _STATE_OF.get(w, "unknown")


def timestamp_ms(v: Any) -> int | None:
    """Milliseconds since the epoch from ISO 8601 text, epoch seconds or epoch milliseconds."""
    n = number(v) if not isinstance(v, str) or re.fullmatch(r"\s*\d+(\.\d+)?\s*", v) else None
    if n is not None:
        if n <= 0:
            return None
        return int(n if n > 1e11 else n * 1000)
    if isinstance(v, str) and len(v) < 64:
        try:
            parsed = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp() * 1000)
    return None


def counts(d: Any) -> dict[str, int | None]:
    """Record counts of a job, from the job itself or a nested counts object."""
    sources = [d]
    for path in SPELLINGS["counts"]:
        v = get(d, path)
        if isinstance(v, dict):
            sources.insert(0, v)
    out: dict[str, int | None] = {}
    for field in ("total", "completed", "failed", "pending", "processing", "cancelled"):
        out[field] = None
        for src in sources:
            c = count(first(src, field))
            if c is not None:
                out[field] = c
                break
    if out["total"] is None and out["completed"] is not None and out["pending"] is not None:
        out["total"] = sum(v or 0 for k, v in out.items() if k != "total")
    return out


def progress(v: Any) -> float | None:
    """Progress as a fraction in [0, 1] from 0.45, 45, "45%", or None."""
    n = number(v)
    if n is None or n < 0:
        return None
    if (isinstance(v, str) and v.strip().endswith("%")) or n > 1:
        n /= 100  # a percentage
    return min(1.0, n)


def listing(body: Any, depth: int = 0) -> list[Any] | None:
    if isinstance(body, list):
        return body
    for path in SPELLINGS["items"]:
        v = get(body, path)
        if isinstance(v, list):
            return v
        if isinstance(v, dict) and depth < 2:  # {"data": {"items": [...]}}
            inner = listing(v, depth + 1)
            if inner is not None:
                return inner
    return None
