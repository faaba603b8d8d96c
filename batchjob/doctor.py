"""`batchjob doctor`: a read-only probe of the configured service for an operator's first day.

Three calls, each shown with its HTTP status, latency, how its answer was understood and
what in it was not mapped: the job list (it also proves the token), a precheck of one
record with the default model and mode, and a GET of the newest job when there is one.
Nothing is uploaded or submitted. The bot runs the same probe at start (one log line per
finding) and `/healthz` reports its result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import locales
from batchjob import DEFAULT_MODE, DEFAULT_MODEL, format_amount, redaction, shapes
from batchjob.answers import answer_of, excerpt, read
from batchjob.client import BatchJobClient
from batchjob.envelopes import ENVELOPE_KEYS, envelope
from batchjob.errors import AuthError, BadAnswer, BatchJobError, InsufficientBalance, Unavailable
from batchjob.models import Estimate, Job, JobPage

EXIT_UNREADABLE = 9  # the service answered in a shape the bot cannot use
# Fields read elsewhere or only passed through: never reported as "not mapped".
_ALSO_KNOWN = {"model", "mode", "page", "page_size", "pageSize", "filename", "displayName", "reason"}
_KNOWN = {path.split(".")[0] for spellings in shapes.SPELLINGS.values() for path in spellings}
_KNOWN |= _ALSO_KNOWN | set(ENVELOPE_KEYS)


@dataclass
class Finding:
    step: str  # list | precheck | job
    method: str
    path: str
    status: int | None
    seconds: float
    raw: str
    understood: list[tuple[str, str]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)
    error: BatchJobError | None = None


@dataclass
class Diagnosis:
    findings: list[Finding]

    @property
    def failed(self) -> Finding | None:
        return next((f for f in self.findings if f.error is not None), None)

    @property
    def ok(self) -> bool:
        # Too little balance is not a fault of the set-up: the bot works and says so.
        failed = self.failed
        return failed is None or isinstance(failed.error, InsufficientBalance)


def _unmapped(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return []
    return sorted(k for k in payload if k not in _KNOWN)[:20]


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else "?"


def _n(v: int | None) -> str:
    return "?" if v is None else str(v)


def _job_fields(job: Job) -> list[tuple[str, str]]:
    frac = job.fraction
    counts = (job.completed, job.failed, job.pending, job.total)
    return [
        ("job_id", job.job_id),
        ("status", f"{job.status} -> {job.state}{' (final)' if job.terminal else ''}"),
        ("progress", f"{frac * 100:.0f}%" if frac is not None else "?"),
        ("counts", "{} done, {} failed, {} pending of {}".format(*(_n(v) for v in counts))),
        ("created", _when(job.created_ms)),
        ("summary_url", "yes" if job.output_summary_url else "no"),
    ]


async def _call(client: BatchJobClient, step: str, method: str, path: str, **kw: Any) -> tuple[Finding, Any]:
    status, seconds, body = await client.probe(method, path, **kw)
    finding = Finding(step, method, path, status, seconds, excerpt(body))
    if status is None:
        finding.error = Unavailable(f"no answer ({body})")
        return finding, None
    import orjson

    content = body.encode() if isinstance(body, str) else orjson.dumps(body)
    try:
        payload = answer_of(status, content)
    except BatchJobError as e:
        finding.error = e
        return finding, None
    unwrapped, _ = envelope(body)
    finding.unmapped = _unmapped(unwrapped)
    return finding, payload


async def diagnose(client: BatchJobClient) -> Diagnosis:
    findings: list[Finding] = []
    f, payload = await _call(client, "list", "GET", "/v1/batch/jobs", params={"page": 1, "page_size": 1})
    findings.append(f)
    newest: str | None = None
    if f.error is None:
        try:
            page = read(JobPage, payload, "job list")
            more = "yes" if page.has_more else ("no" if page.has_more is False else "?")
            f.understood = [("jobs", str(len(page.items))), ("total", str(page.total)), ("more", more)]
            newest = page.items[0].job_id if page.items else None
        except BadAnswer as e:
            f.error = e
    if isinstance(f.error, AuthError):
        return Diagnosis(findings)  # nothing else can work with this token
    body = {"record_count": 1, "model": DEFAULT_MODEL, "mode": DEFAULT_MODE}
    f, payload = await _call(client, "precheck", "POST", "/v1/batch/jobs:precheck", json=body)
    findings.append(f)
    if f.error is None:
        try:
            est = read(Estimate, payload, "precheck")
            unit = f" {est.currency}" if est.currency else ""
            f.understood = [
                ("cost", format_amount(est.estimated_cost) + unit),
                ("unit_price", format_amount(est.unit_price) + unit),
                ("balance", format_amount(est.balance) + unit),
                ("sufficient", {True: "yes", False: "no", None: "?"}[est.sufficient]),
            ]
            if est.estimated_cost is None:
                f.error = BadAnswer("precheck: no cost in the answer", excerpt=f.raw)
        except BadAnswer as e:
            f.error = e
    if newest:
        f, payload = await _call(client, "job", "GET", f"/v1/batch/jobs/{newest}")
        findings.append(f)
        if f.error is None:
            try:
                f.understood = _job_fields(read(Job, payload, "job"))
            except BadAnswer as e:
                f.error = e
    return Diagnosis(findings)


def exit_code(d: Diagnosis) -> int:
    from batchjob.cli_jobs import service_error

    failed = d.failed
    if d.ok or failed is None or failed.error is None:
        return 0
    if isinstance(failed.error, BadAnswer):
        return EXIT_UNREADABLE
    return service_error(failed.error, "en")[1]


def render(d: Diagnosis, lang: str, raw: bool = False) -> str:
    t = locales.t
    lines = []
    for n, f in enumerate(d.findings, 1):
        status = str(f.status) if f.status is not None else "-"
        ms = round(f.seconds * 1000)
        lines.append(
            t(lang, f"doctor.step.{f.step}", n=n, method=f.method, path=f.path, status=status, ms=ms)
        )
        if f.understood:
            shown = ", ".join(f"{k}={v}" for k, v in f.understood)
            lines.append("   " + t(lang, "doctor.understood", fields=shown))
        if f.unmapped:
            lines.append("   " + t(lang, "doctor.unmapped", fields=", ".join(f.unmapped)))
        if f.error is not None:
            lines.append("   " + t(lang, "doctor.error", error=redaction.redact(str(f.error), 300)))
        if raw:
            lines.append("   " + t(lang, "doctor.raw", raw=f.raw))
    failed = d.failed
    if d.ok:
        lines.append(t(lang, "doctor.ok" if failed is None else "doctor.ok_low_balance"))
    else:
        assert failed is not None
        lines.append(t(lang, "doctor.failed", step=t(lang, f"doctor.name.{failed.step}")))
    return "\n".join(lines)


def log_lines(d: Diagnosis) -> list[str]:
    """One line per finding, for the bot's log at start (English, no secrets)."""
    out = []
    for f in d.findings:
        what = ", ".join(f"{k}={v}" for k, v in f.understood)
        err = f" error: {redaction.redact(str(f.error), 200)}" if f.error else ""
        extra = f" not mapped: {', '.join(f.unmapped)}" if f.unmapped else ""
        out.append(
            f"service probe {f.step}: HTTP {f.status} in {f.seconds * 1000:.0f} ms; {what}{extra}{err}"
        )
    return out


class Probe:
    """The doctor's result kept for a running bot: taken at start, taken again when asked
    after `retry_s` if it failed (a service down at start is not down for ever), or after
    `max_age_s` if it passed."""

    def __init__(self, client: BatchJobClient, *, retry_s: float = 30.0, max_age_s: float = 3600.0) -> None:
        self.client = client
        self.retry_s = retry_s
        self.max_age_s = max_age_s
        self.last: Diagnosis | None = None
        self._at = 0.0

    async def run(self, timeout_s: float = 20.0) -> Diagnosis | None:
        import asyncio
        import time

        try:
            self.last = await asyncio.wait_for(diagnose(self.client), timeout_s)
        except TimeoutError:
            self.last = Diagnosis(
                [Finding("list", "GET", "/v1/batch/jobs", None, timeout_s, "", error=Unavailable("timeout"))]
            )
        self._at = time.monotonic()
        return self.last

    async def current(self) -> Diagnosis | None:
        import time

        age = time.monotonic() - self._at
        if self.last is None or age > (self.retry_s if not self.last.ok else self.max_age_s):
            await self.run()
        return self.last

    def summary(self) -> str:
        if self.last is None:
            return "not run"
        failed = self.last.failed
        return "ok" if self.last.ok else f"failed: {failed.step if failed else '?'}"
