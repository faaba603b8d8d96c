"""The sandbox's state: its settings (the fault knobs among them), the files uploaded and
the jobs, whose progress is read off the clock (`SandboxState.view`)."""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class SandboxConfig:
    token: str = "sandbox-token"
    balance: float = 1000.0
    price_per_record: dict[str, float] = field(default_factory=lambda: {"fast": 0.02, "standard": 0.04})
    default_price: float = 0.03
    records_per_second: float = 20.0
    queue_seconds: float = 0.5
    fail_marker: str = "[fail]"
    latency: float = 0.0  # seconds added to every API request
    error_rate: float = 0.0  # share of API requests answered 503
    rate_limit_every: int = 0  # every Nth API request answered 429
    retry_after: float = 1.0
    drop_submit_replies: int = 0  # the next N submits create the job, then never answer
    drop_seconds: float = 60.0
    envelope: bool = False  # wrap answers in {"data": ...}
    style: str = "ours"  # answer shapes: ours | envelope | camel (batchjob/sandbox_styles.py)
    results_file: bool = True  # jobs name a results file (images inline); off: the summary only (URLs)
    results_file_id: bool = False  # jobs name their results file by id only (`result_file_id`)
    topup_url: str = ""  # a short balance names this page to top up at (precheck and 402)
    # Uploads read in this process, not the isolated parse worker: only for a stand-in on
    # the bot's own machine reading what the bot wrote (bench/e2e), whose forked readers
    # would otherwise take a third of the two cores the bot is measured on.
    read_in_process: bool = False

    def price(self, model: str, mode: str) -> float:
        return self.price_per_record.get(
            f"{model}:{mode}", self.price_per_record.get(mode, self.default_price)
        )


@dataclass
class StoredFile:
    file_id: str
    filename: str
    mode: str
    row_count: int
    fail_at: list[int]  # sorted indexes of records that will fail
    prompts: list[str]
    created_at: str
    ratios: list[str] = field(default_factory=list)  # each record's aspect ratio (its image's shape)


@dataclass
class Job:
    job_id: str
    file_id: str
    model: str
    mode: str
    total: int
    fail_at: list[int]
    created: float
    created_at: str
    summary_secret: str
    cancelled: tuple[int, int, float] | None = None  # (completed, failed, at) when cancelled
    reason: str | None = None


class SandboxState:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.balance = config.balance
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, Job] = {}
        self.requests = 0
        self.submits = 0  # POST /v1/batch/jobs received (for exactly-once checks)
        self.lock = threading.Lock()
        self.clock = time.monotonic

    def view(self, job: Job, base: str) -> dict[str, Any]:
        now = self.clock()
        cfg = self.config
        if job.cancelled is not None:
            completed, failed, at = job.cancelled
            status, finished = "cancelled", at
        else:
            elapsed = now - job.created
            processed = (
                0
                if elapsed < cfg.queue_seconds
                else int((elapsed - cfg.queue_seconds) * cfg.records_per_second)
            )
            processed = min(job.total, processed)
            failed = bisect_right(job.fail_at, processed - 1)
            completed = processed - failed
            finished = None
            if elapsed < cfg.queue_seconds:
                status = "queued"
            elif processed < job.total:
                status = "running"
            else:
                status = "completed" if failed == 0 else ("failed" if completed == 0 else "partially_failed")
                finished = job.created + cfg.queue_seconds + job.total / cfg.records_per_second
        wall = time.time() - (now - finished) if finished is not None else None
        return {
            "job_id": job.job_id,
            "status": status,
            "file_id": job.file_id,
            "model": job.model,
            "mode": job.mode,
            "total": job.total,
            "completed": completed,
            "failed": failed,
            "progress": round(100 * (completed + failed) / job.total, 2) if job.total else 100.0,
            "created_at": job.created_at,
            "finished_at": iso(wall, "milliseconds") if wall is not None else None,
            "output_summary_url": (
                f"{base}/sandbox/summaries/{job.job_id}/{job.summary_secret}"
                if status in ("completed", "failed", "partially_failed", "cancelled")
                else None
            ),
            # The records' outputs, images inline (a results file, as Vertex batch jobs write).
            "output_file_url": (
                f"{base}/sandbox/results/{job.job_id}/{job.summary_secret}"
                if cfg.results_file
                and not cfg.results_file_id
                and status in ("completed", "failed", "partially_failed", "cancelled")
                else None
            ),
            "result_file_id": (
                f"res_{job.job_id}"
                if cfg.results_file_id and status in ("completed", "failed", "partially_failed", "cancelled")
                else None
            ),
        }


def iso(ts: float | None = None, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec=timespec)
