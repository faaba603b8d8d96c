"""The sandbox's answers in other plausible API styles, so that the client is tried against
shapes it was not written for (`batchjob sandbox --style`, or `style` in /_sandbox/config):

- `ours`: the shapes the rest of the sandbox writes (snake_case, flat counts, numbers).
- `envelope`: every answer as `{"code": 0, "message": "ok", "request_id", "data": …}`, money
  as objects (`{"amount", "unit"}`, balance under `balance.current`), progress as an object of
  counts, upper-case statuses (`SUCCEEDED`, `IN_PROGRESS`…), epoch-second timestamps, lists
  under `list` with `has_more`; business errors (balance, validation, not found, conflict)
  in an HTTP 200 whose envelope says failure (`code` 40201, `POINTS_INSUFFICIENT`…).
- `camel`: Google-like: camelCase, `name: "batches/<id>"`, `state: "JOB_STATE_…"`, counts as
  strings under `batchStats`, epoch-millisecond times, money as numeric strings, lists under
  `batches` with `nextPageToken`, errors as `{"error": {code, message, status, details}}`.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

STYLES = ("ours", "envelope", "camel")

_UPPER = {
    "queued": "PENDING",
    "running": "IN_PROGRESS",
    "completed": "SUCCEEDED",
    "partially_failed": "PARTIALLY_SUCCEEDED",
    "failed": "FAILED",
    "cancelled": "CANCELED",
    "expired": "EXPIRED",
}


def _epoch(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    return datetime.fromisoformat(iso).timestamp()


def _money(amount: Any, unit: str = "credits") -> dict[str, Any]:
    return {"amount": amount, "unit": unit}


def answer(style: str, kind: str, data: Any) -> Any:
    """A successful answer (`kind`: upload, estimate, job, list) in `style`."""
    if style == "envelope":
        return {
            "code": 0,
            "message": "ok",
            "request_id": "req_" + secrets.token_hex(6),
            "data": _env(kind, data),
        }
    if style == "camel":
        return _camel(kind, data)
    return data


def _env(kind: str, d: Any) -> Any:
    if kind == "upload":
        return {"file_id": d["file_id"], "records": d["row_count"], "filename": d.get("filename")}
    if kind == "estimate":
        return {
            "record_count": d["record_count"],
            "model": d["model"],
            "mode": d["mode"],
            "unit_price": _money(d["unit_price"]),
            "estimated_cost": _money(d["estimated_cost"]),
            "balance": {"current": _money(d["balance"])},
            "sufficient": d["sufficient"],
        }
    if kind == "job":
        return {
            "id": d["job_id"],
            "status": _UPPER.get(d["status"], d["status"].upper()),
            "progress": {
                "total": d["total"],
                "succeeded": d["completed"],
                "failed": d["failed"],
                "pending": d["total"] - d["completed"] - d["failed"],
            },
            "file_id": d["file_id"],
            "model": d["model"],
            "mode": d["mode"],
            "created_at": int(_epoch(d["created_at"]) or 0),
            "finished_at": int(_epoch(d["finished_at"]) or 0) or None,
            "summary_url": d["output_summary_url"],
            "results_url": d.get("output_file_url"),
            "result_file_id": d.get("result_file_id"),
        }
    if kind == "list":
        items = [_env("job", j) for j in d["items"]]
        more = d["page"] * d["page_size"] < d["total"]
        return {"list": items, "total": d["total"], "has_more": more}
    return d


def _camel(kind: str, d: Any) -> Any:
    if kind == "upload":
        return {"fileId": d["file_id"], "rowCount": str(d["row_count"]), "displayName": d.get("filename")}
    if kind == "estimate":
        return {
            "recordCount": d["record_count"],
            "model": d["model"],
            "mode": d["mode"],
            "unitPrice": str(d["unit_price"]),
            "estimatedCost": str(d["estimated_cost"]),
            "currencyCode": "credits",
            "currentBalance": str(d["balance"]),
        }
    if kind == "job":
        state = {"queued": "PENDING", "running": "RUNNING", "completed": "SUCCEEDED"}.get(d["status"])
        state = state or _UPPER.get(d["status"], d["status"].upper())
        created, finished = _epoch(d["created_at"]), _epoch(d["finished_at"])
        return {
            "name": f"batches/{d['job_id']}",
            "state": f"JOB_STATE_{state}",
            "batchStats": {
                "requestCount": str(d["total"]),
                "successfulRequestCount": str(d["completed"]),
                "failedRequestCount": str(d["failed"]),
                "pendingRequestCount": str(d["total"] - d["completed"] - d["failed"]),
            },
            "fileId": d["file_id"],
            "model": d["model"],
            "mode": d["mode"],
            "createTime": int(created * 1000) if created else None,
            "endTime": int(finished * 1000) if finished else None,
            "outputSummaryUrl": d["output_summary_url"],
            "outputUri": d.get("output_file_url"),
            "outputFileId": d.get("result_file_id"),
        }
    if kind == "list":
        out: dict[str, Any] = {"batches": [_camel("job", j) for j in d["items"]], "totalSize": d["total"]}
        if d["page"] * d["page_size"] < d["total"]:
            out["nextPageToken"] = str(d["page"] + 1)
        return out
    return d


_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "FAILED_PRECONDITION",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}


def error(style: str, status: int, code: str, message: str, extra: dict[str, Any]) -> tuple[int, Any]:
    """(HTTP status, body) of an error in `style`."""
    if style == "envelope":
        data: dict[str, Any] = {}
        if "current_balance" in extra:
            data = {
                "current_balance": _money(extra["current_balance"]),
                "required_balance": _money(extra["required"]),
                "recharge_url": "https://example.com/recharge",
            }
        word = "POINTS_INSUFFICIENT" if code == "insufficient_balance" else code.upper()
        body = {
            "code": status * 100 + 1,
            "message": message,
            "error_code": word,
            "success": False,
            "data": data,
        }
        # Gateways answer auth, rate limits and outages in HTTP; the rest is said in a 200.
        return (status if status in (401, 429) or status >= 500 else 200), body
    if style == "camel":
        details: list[dict[str, Any]] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code.upper()}
        ]
        if "current_balance" in extra:
            details[0]["metadata"] = {
                "currentBalance": str(extra["current_balance"]),
                "requiredBalance": str(extra["required"]),
            }
        err = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
            "details": details,
        }
        return status, {"error": err}
    return status, {"error": {"code": code, "message": message, **extra}}
