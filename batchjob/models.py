"""Typed results of the BatchJob API, tolerant of what the real service may send.

Unknown fields are kept (`extra="allow"`), common alternative names are accepted, a
`{"data": ...}` envelope is unwrapped by the client, progress is read from counts or a
number, and unknown statuses are kept verbatim and treated as still running.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

TERMINAL_STATUSES = frozenset({"completed", "failed", "partially_failed", "cancelled", "expired"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _num(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return v


class UploadResult(_Model):
    file_id: str = Field(validation_alias=AliasChoices("file_id", "fileId", "id"))
    row_count: int | None = Field(
        None, validation_alias=AliasChoices("row_count", "rowCount", "record_count", "records", "count")
    )


class Estimate(_Model):
    record_count: int | None = Field(
        None, validation_alias=AliasChoices("record_count", "recordCount", "rows")
    )
    model: str | None = None
    mode: str | None = None
    estimated_cost: float | None = Field(
        None,
        validation_alias=AliasChoices(
            "estimated_cost", "estimatedCost", "estimate", "cost", "total_cost", "amount"
        ),
    )
    unit_price: float | None = Field(None, validation_alias=AliasChoices("unit_price", "unitPrice", "price"))
    currency: str | None = None
    balance: float | None = Field(
        None, validation_alias=AliasChoices("balance", "current_balance", "currentBalance", "available")
    )
    sufficient: bool | None = Field(None, validation_alias=AliasChoices("sufficient", "enough_balance", "ok"))

    _n = field_validator("estimated_cost", "unit_price", "balance", mode="before")(_num)


class Job(_Model):
    job_id: str = Field(validation_alias=AliasChoices("job_id", "jobId", "id"))
    status: str = "unknown"
    progress: float | None = None
    total: int | None = Field(
        None,
        validation_alias=AliasChoices("total", "record_count", "total_records", "totalRecords", "row_count"),
    )
    completed: int | None = Field(
        None,
        validation_alias=AliasChoices(
            "completed", "completed_records", "succeeded", "success_count", "completedRecords", "done"
        ),
    )
    failed: int | None = Field(
        None, validation_alias=AliasChoices("failed", "failed_records", "failure_count", "failedRecords")
    )
    file_id: str | None = Field(None, validation_alias=AliasChoices("file_id", "fileId"))
    model: str | None = None
    mode: str | None = None
    created_at: str | float | None = Field(None, validation_alias=AliasChoices("created_at", "createdAt"))
    finished_at: str | float | None = Field(None, validation_alias=AliasChoices("finished_at", "finishedAt"))
    output_summary_url: str | None = Field(
        None, validation_alias=AliasChoices("output_summary_url", "outputSummaryUrl", "summary_url")
    )

    _n = field_validator("progress", mode="before")(_num)

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, v: Any) -> str:
        return str(v).strip().lower() if v is not None else "unknown"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def processed(self) -> int | None:
        if self.completed is None and self.failed is None:
            return None
        return (self.completed or 0) + (self.failed or 0)

    @property
    def fraction(self) -> float | None:
        """Progress in [0, 1]: from counts when given, else from `progress` (0-1 or 0-100)."""
        if self.total and self.processed is not None:
            return max(0.0, min(1.0, self.processed / self.total))
        if self.progress is None:
            return 1.0 if self.status == "completed" else None
        p = self.progress / 100 if self.progress > 1 else self.progress
        return max(0.0, min(1.0, p))


class JobPage(_Model):
    items: list[Job] = Field(
        default_factory=list, validation_alias=AliasChoices("items", "jobs", "data", "results")
    )
    page: int | None = None
    page_size: int | None = Field(None, validation_alias=AliasChoices("page_size", "pageSize"))
    total: int | None = None
