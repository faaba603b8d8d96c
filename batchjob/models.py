"""Typed results of the BatchJob API, read from whatever shape the service answers.

Each model reads its input through `batchjob.shapes` before validation, so any plausible
spelling becomes the same typed fields; unknown fields are kept (`extra="allow"`). A
result that lacks what makes it usable (a job without an id, an upload without a file id)
fails validation; the client turns that into `BatchJobError` (`BadAnswer`), never lets a
pydantic error out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from batchjob import shapes

TERMINAL_STATUSES = shapes.TERMINAL


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _id(v: Any) -> str | None:
    t = shapes.text(v, 256)
    if t is None:
        return None
    t = t.strip()
    # Google-style resource names ("batches/abc", "projects/…/batchPredictionJobs/123"): the last part.
    return t.rsplit("/", 1)[-1] or None


def _scalar(v: Any) -> str | float | None:
    if isinstance(v, str):
        return v[:64]
    return float(v) if shapes.number(v) is not None and not isinstance(v, str) else None


def _obj(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    return data


class UploadResult(_Model):
    file_id: str
    row_count: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        d = _obj(data)
        file = d.get("file") if isinstance(d.get("file"), dict) else {}
        return {
            **d,
            "file_id": _id(shapes.first(d, "file_id")) or _id(shapes.first(file, "file_id")),
            "row_count": shapes.count(shapes.first(d, "row_count") or shapes.first(file, "row_count")),
        }


class Estimate(_Model):
    record_count: int | None = None
    model: str | None = None
    mode: str | None = None
    estimated_cost: float | None = None
    unit_price: float | None = None
    currency: str | None = None
    balance: float | None = None
    required: float | None = None
    sufficient: bool | None = None
    recharge_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        d = _obj(data)
        cost, unit = shapes.money(shapes.first(d, "estimated_cost"))
        price, unit2 = shapes.money(shapes.first(d, "unit_price"))
        balance, unit3 = shapes.money(shapes.first(d, "balance"))
        required, _ = shapes.money(shapes.first(d, "required"))
        sufficient = shapes.first(d, "sufficient")
        if not isinstance(sufficient, bool):
            sufficient = None
        if sufficient is None and cost is not None and balance is not None:
            sufficient = cost <= balance
        url = shapes.first(d, "recharge_url")
        return {
            **d,
            "record_count": shapes.count(shapes.first(d, "row_count")),
            "model": shapes.text(d.get("model")),
            "mode": shapes.text(d.get("mode")),
            "estimated_cost": cost,
            "unit_price": price,
            "currency": shapes.text(shapes.first(d, "currency")) or unit or unit2 or unit3,
            "balance": balance,
            "required": required,
            "sufficient": sufficient,
            "recharge_url": url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
        }


class Job(_Model):
    job_id: str
    status: str = "unknown"  # the service's own word, for display
    state: str = "unknown"  # ours, for decisions (shapes.STATES)
    progress: float | None = None  # a fraction in [0, 1], when the service gives one
    total: int | None = None
    completed: int | None = None
    failed: int | None = None
    pending: int | None = None
    processing: int | None = None
    cancelled: int | None = None
    file_id: str | None = None
    model: str | None = None
    mode: str | None = None
    created_at: str | float | None = None
    created_ms: int | None = None
    finished_at: str | float | None = None
    output_summary_url: str | None = None
    results_url: str | None = None  # a results file (per-record outputs), when the job names one
    result_file_id: str | None = None  # or the id of that file at the service

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        d = _obj(data)
        word = shapes.first(d, "status")
        if isinstance(word, dict):  # {"status": {"state": "RUNNING", …}}
            word = shapes.first(word, "status")
        status = shapes.text(word, 64) or "unknown"
        created = shapes.first(d, "created_at")
        finished = shapes.first(d, "finished_at")
        summary = shapes.first(d, "output_summary_url")
        results = shapes.first(d, "results_url")
        result_file = shapes.first(d, "result_file_id")
        return {
            **d,
            "job_id": _id(shapes.first(d, "job_id")),
            "status": status.strip(),
            "state": shapes.state_of(status),
            "progress": shapes.progress(shapes.first(d, "progress")),
            **shapes.counts(d),
            "file_id": _id(shapes.first(d, "file_id")) if "file_id" in d or "fileId" in d else None,
            "model": shapes.text(d.get("model")),
            "mode": shapes.text(d.get("mode")),
            "created_at": _scalar(created),
            "created_ms": shapes.timestamp_ms(created),
            "finished_at": _scalar(finished),
            "output_summary_url": summary if isinstance(summary, str) else None,
            "results_url": results if isinstance(results, str) else None,
            "result_file_id": _id(result_file) if result_file is not None else None,
        }

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATUSES

    @property
    def processed(self) -> int | None:
        if self.completed is None and self.failed is None:
            return None
        return (self.completed or 0) + (self.failed or 0)

    @property
    def fraction(self) -> float | None:
        """Progress in [0, 1]: from counts when given, else from `progress`."""
        if self.total and self.processed is not None:
            return max(0.0, min(1.0, self.processed / self.total))
        if self.progress is None:
            return 1.0 if self.state == "completed" else None
        return self.progress


class JobPage(_Model):
    items: list[Job] = []
    page: int | None = None
    page_size: int | None = None
    total: int | None = None
    has_more: bool | None = None
    next_cursor: str | None = None
    unreadable: int = 0  # items that were not jobs (no id): left out, counted

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        raw = shapes.listing(data)
        d = data if isinstance(data, dict) else {}
        if raw is None and shapes.count(shapes.first(d, "page_total")) != 0:
            raise ValueError("no list of jobs in the answer")
        items, bad = [], 0
        for item in raw or []:
            try:
                items.append(Job.model_validate(item))
            except ValueError:  # pydantic's ValidationError is a ValueError
                bad += 1
        more = shapes.first(d, "has_more")
        nxt = shapes.first(d, "next")
        page_size = d.get("page_size", d.get("pageSize"))
        return {
            "items": items,
            "page": shapes.count(d.get("page")),
            "page_size": shapes.count(page_size),
            "total": shapes.count(shapes.first(d, "page_total")),
            "has_more": more if isinstance(more, bool) else (bool(nxt) if nxt is not None else None),
            "next_cursor": shapes.text(nxt, 500) if nxt not in (None, "", 0) else None,
            "unreadable": bad,
        }
