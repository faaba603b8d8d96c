"""`batchjob submit|status|jobs|cancel|sandbox`: the service commands of the CLI.

Exit codes (added to those of `batchjob.cli`): 3 configuration missing or invalid,
4 authentication refused, 5 insufficient balance, 6 rejected by the service (bad file,
not found, conflict), 7 service unavailable or rate limited, 8 outcome unknown (a submit
was sent and no answer came back; it is never repeated automatically), 9 (doctor) the
service's answers could not be understood. With --watch, a job's end: 0 completed,
10 partially failed, 11 failed, 12 cancelled or expired.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import locales
from batchjob import DEFAULT_MODE, DEFAULT_MODEL, format_amount
from batchjob.shapes import STATES

EXIT_CONFIG, EXIT_AUTH, EXIT_BALANCE, EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_UNKNOWN = 3, 4, 5, 6, 7, 8
# A job followed to its end (--watch): completed 0; some records failed 10; all failed 11;
# stopped before the end (cancelled, expired) 12 - so scripts can tell them apart.
JOB_EXIT = {"partially_failed": 10, "failed": 11, "cancelled": 12, "expired": 12}


def register(sub: Any) -> None:
    s = sub.add_parser(
        "submit",
        help="inspect, upload, precheck and submit a file",
        description="Inspect FILE locally, upload it, show the estimate, then submit a job "
        "(never twice). Uses BATCHJOB_BASE_URL and BATCHJOB_BEARER_TOKEN.",
    )
    s.add_argument("file", metavar="FILE")
    s.add_argument("--model", default=None, help=f"model (default {DEFAULT_MODEL})")
    s.add_argument("--mode", default=None, help=f"mode (default {DEFAULT_MODE})")
    s.add_argument("--estimate-only", action="store_true", help="stop after the precheck")
    s.add_argument("--skip-invalid", action="store_true", help="send only the valid rows")
    s.add_argument("--watch", action="store_true", help="follow the job until it ends")
    s.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --watch")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout instead of text")

    st = sub.add_parser("status", help="show one job", description="Show a job's status and counts.")
    st.add_argument("job_id", metavar="JOB_ID")
    st.add_argument("--watch", action="store_true", help="follow the job until it ends")
    st.add_argument("--interval", type=float, default=2.0)
    st.add_argument("--json", action="store_true", help="the job as JSON (with --watch: at its end)")

    j = sub.add_parser("jobs", help="list jobs", description="List the service's jobs, newest first.")
    j.add_argument(
        "--status",
        default=None,
        choices=sorted(STATES),
        help="only jobs with this status",
    )
    j.add_argument("--page", type=int, default=1)
    j.add_argument("--page-size", type=int, default=20)
    j.add_argument("--json", action="store_true", help="the page as JSON")

    c = sub.add_parser("cancel", help="cancel a job", description="Cancel a queued or running job.")
    c.add_argument("job_id", metavar="JOB_ID")
    c.add_argument("--reason", default="", help="reason recorded with the cancellation")
    c.add_argument("--json", action="store_true", help="the job as JSON")

    d = sub.add_parser(
        "doctor",
        help="check the configured service (read-only)",
        description="Probe the service named by BATCHJOB_BASE_URL with BATCHJOB_BEARER_TOKEN: the job "
        "list, a precheck of one record, and the newest job. Shows each call's HTTP status, latency, "
        "how its answer was understood and what was not mapped. Uploads and submits nothing. Exit 0 "
        "when the bot can work with the service; else the failing step's code (9: answers not "
        "understood).",
    )
    d.add_argument("--raw", action="store_true", help="also show each raw answer (secrets redacted)")

    sb = sub.add_parser(
        "sandbox",
        help="run the local sandbox server",
        description="A local BatchJob-compatible server for development and tests only: "
        "jobs advance on a timer, prompts containing the fail marker fail.",
    )
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8800)
    sb.add_argument("--token", default="sandbox-token", help="bearer token the sandbox accepts")
    sb.add_argument("--records-per-second", type=float, default=20.0)
    sb.add_argument("--balance", type=float, default=1000.0)
    sb.add_argument("--fail-marker", default="[fail]")
    sb.add_argument(
        "--style",
        choices=("ours", "envelope", "camel"),
        default="ours",
        help="answer shapes: ours; envelope ({code, message, data}, money and count objects); "
        "camel (Google-like camelCase, JOB_STATE_*)",
    )


# What this command already did at the service, for an honest message if it then fails.
SO_FAR: dict[str, str] = {}


def so_far(lang: str) -> str:
    if "job_id" in SO_FAR:
        return "\n" + locales.t(lang, "cli.error.so_far_submitted", job_id=SO_FAR["job_id"])
    if "submit_sent" in SO_FAR:
        return "\n" + locales.t(lang, "cli.error.so_far_submit_sent", file_id=SO_FAR["file_id"])
    if "file_id" in SO_FAR:
        return "\n" + locales.t(lang, "cli.error.so_far_uploaded", file_id=SO_FAR["file_id"])
    return ""


def job_json(job: Any) -> dict[str, Any]:
    """A job as scripts want it: our state and the service's word, counts, progress."""
    return {
        "job_id": job.job_id,
        "state": job.state,
        "status": job.status,
        "terminal": job.terminal,
        "total": job.total,
        "completed": job.completed,
        "failed": job.failed,
        "pending": job.pending,
        "fraction": job.fraction,
        "model": job.model,
        "mode": job.mode,
        "created_at": job.created_at,
        "output_summary_url": job.output_summary_url,
    }


def _emit(data: Any) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(data).decode() + "\n")


def _client() -> Any:
    from batchjob.client import BatchJobClient, Timeouts
    from batchjob.settings import load_service_settings

    cfg = load_service_settings()
    return BatchJobClient(
        cfg.base_url,
        cfg.bearer_token.get_secret_value(),
        timeouts=Timeouts(connect=cfg.connect_timeout, read=cfg.read_timeout),
        retries=cfg.retries,
    )


def run(args: argparse.Namespace, lang: str) -> int:
    from batchjob.cli import CliError
    from batchjob.errors import BatchJobError
    from batchjob.settings import ConfigError

    if args.command == "sandbox":
        return _sandbox(args, lang)
    import asyncio  # not at module level: `batchjob convert` starts faster without it

    t = locales.t
    try:
        return asyncio.run(_COMMANDS[args.command](args, lang))
    except ConfigError as e:
        raise CliError(t(lang, "cli.error.config", detail=e), EXIT_CONFIG) from None
    except BatchJobError as e:
        message, code = service_error(e, lang)
        raise CliError(message + so_far(lang), code) from None


def service_error(e: Any, lang: str) -> tuple[str, int]:
    from batchjob.errors import (
        AuthError,
        Conflict,
        InsufficientBalance,
        NotFound,
        OutcomeUnknown,
        Unavailable,
    )

    t = locales.t
    if isinstance(e, AuthError):
        return t(lang, "cli.error.auth", status=e.status), EXIT_AUTH
    if isinstance(e, InsufficientBalance):
        unit = f" {e.currency}" if e.currency else ""
        figures = {k: format_amount(getattr(e, k)) + unit for k in ("current", "required", "shortfall")}
        text = t(lang, "cli.error.balance", **figures)
        if e.recharge_url:
            text += "\n" + t(lang, "error.balance_topup", url=e.recharge_url)
        return text, EXIT_BALANCE
    if isinstance(e, OutcomeUnknown):
        return t(lang, "cli.error.outcome_unknown"), EXIT_UNKNOWN
    if isinstance(e, Unavailable):
        return t(lang, "cli.error.unavailable", message=e.message or e.kind), EXIT_UNAVAILABLE
    if isinstance(e, NotFound):
        return t(lang, "cli.error.not_found", message=e.message or e.code), EXIT_REJECTED
    if isinstance(e, Conflict):
        return t(lang, "cli.error.conflict", message=e.message or e.code), EXIT_REJECTED
    return t(lang, "cli.error.rejected", message=e.message or e.code or e.kind), EXIT_REJECTED


async def _submit(args: argparse.Namespace, lang: str) -> int:
    from batchjob import cli_submit

    return await cli_submit.command(args, lang)


async def _follow(
    client: Any, job_id: str, interval: float, lang: str, result: dict[str, Any] | None = None
) -> int:
    """Poll the job to its end; `result["job"]` gets the last answer (for --json)."""
    import asyncio

    tty = sys.stdout.isatty()
    last = ""
    try:
        while True:
            job = await client.get_job(job_id)
            line = _status_line(job, lang)
            if tty:
                sys.stdout.write("\r" + _bar(job.fraction) + " " + line + "\x1b[K")
                sys.stdout.flush()
            elif line != last:
                print(line)
            last = line
            if result is not None:
                result["job"] = job_json(job)
            if job.terminal:
                if tty:
                    sys.stdout.write("\n")
                if job.output_summary_url:
                    print(locales.t(lang, "cli.job.summary_url", url=job.output_summary_url))
                return JOB_EXIT.get(job.state, 0)
            await asyncio.sleep(interval)
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\n" + locales.t(lang, "cli.job.watch_stopped", job_id=job_id), file=sys.stderr)
        return 130


def _bar(fraction: float | None, width: int = 24) -> str:
    f = fraction or 0.0
    full = int(f * width)
    return "[" + "#" * full + "." * (width - full) + "]"


def _status_line(job: Any, lang: str) -> str:
    pct = (
        locales.t(lang, "cli.job.percent", percent=round(job.fraction * 100))
        if job.fraction is not None
        else ""
    )
    return locales.t(
        lang,
        "cli.job.status",
        job_id=job.job_id,
        status=locales.status_name(lang, job.state, job.status),
        done=job.processed if job.processed is not None else "?",
        total=job.total if job.total is not None else "?",
        failed=job.failed or 0,
        percent=pct,
    )


async def _status(args: argparse.Namespace, lang: str) -> int:
    import contextlib
    import io

    async with _client() as client:
        if args.watch:
            result: dict[str, Any] = {}
            quiet = contextlib.redirect_stdout(io.StringIO()) if args.json else contextlib.nullcontext()
            with quiet:
                code = await _follow(client, args.job_id, args.interval, lang, result)
            if args.json:
                _emit(result.get("job"))
            return code
        job = await client.get_job(args.job_id)
    if args.json:
        _emit(job_json(job))
        return 0
    print(_status_line(job, lang))
    if job.output_summary_url:
        print(locales.t(lang, "cli.job.summary_url", url=job.output_summary_url))
    return 0


async def _jobs(args: argparse.Namespace, lang: str) -> int:
    async with _client() as client:
        page = await client.list_jobs(args.page, args.page_size, args.status)
    if args.json:
        _emit(
            {
                "page": page.page,
                "page_size": page.page_size,
                "total": page.total,
                "has_more": page.has_more,
                "items": [job_json(j) for j in page.items],
            }
        )
        return 0
    if not page.items:
        print(locales.t(lang, "cli.job.list_empty"))
        return 0
    for job in page.items:
        print(_status_line(job, lang))
    print(
        locales.t(
            lang,
            "cli.job.list_page",
            page=page.page or args.page,
            shown=len(page.items),
            count=page.total if page.total is not None else len(page.items),
        )
    )
    return 0


async def _cancel(args: argparse.Namespace, lang: str) -> int:
    async with _client() as client:
        job = await client.cancel(args.job_id, args.reason)
    if args.json:
        _emit(job_json(job))
        return 0
    print(
        locales.t(
            lang,
            "cli.job.cancelled",
            job_id=job.job_id,
            status=locales.status_name(lang, job.state, job.status),
        )
    )
    return 0


def _sandbox(args: argparse.Namespace, lang: str) -> int:
    from batchjob.sandbox_server import serve
    from batchjob.sandbox_state import SandboxConfig

    print(
        locales.t(lang, "cli.sandbox.listening", host=args.host, port=args.port, token=args.token), flush=True
    )
    serve(
        args.host,
        args.port,
        SandboxConfig(
            token=args.token,
            records_per_second=args.records_per_second,
            balance=args.balance,
            fail_marker=args.fail_marker,
            style=args.style,
        ),
    )
    return 0


async def _doctor(args: argparse.Namespace, lang: str) -> int:
    from batchjob import doctor

    async with _client() as client:
        diagnosis = await doctor.diagnose(client)
    print(doctor.render(diagnosis, lang, raw=args.raw))
    return doctor.exit_code(diagnosis)


async def _results(args: argparse.Namespace, lang: str) -> int:
    from batchjob import cli_results

    return await cli_results.command(args, lang)


_COMMANDS = {
    "submit": _submit,
    "status": _status,
    "jobs": _jobs,
    "cancel": _cancel,
    "doctor": _doctor,
    "results": _results,
}
NAMES = ("submit", "status", "jobs", "cancel", "doctor", "sandbox", "results")
