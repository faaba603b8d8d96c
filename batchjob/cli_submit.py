"""`batchjob submit`: a file read in isolation, uploaded, priced and submitted once.

What reached the service is kept in `cli_jobs.SO_FAR`, so that an error says how far it
got (a file uploaded, a submit sent, a job created) and nothing is repeated blindly."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import locales
from batchjob import DEFAULT_MODE, DEFAULT_MODEL, format_amount
from batchjob.cli_jobs import EXIT_BALANCE, SO_FAR, _client, _emit, _follow, job_json


async def command(args: argparse.Namespace, lang: str) -> int:
    """Read the file (isolated), upload it, price it; submit once unless told to stop at the
    estimate or the balance is short; with --watch, follow the job to its end."""
    from batchjob.cli import EXIT_INVALID, print_report
    from batchjob.input.isolation import convert_file_async

    t = locales.t
    model, mode = args.model or DEFAULT_MODEL, args.mode or DEFAULT_MODE
    client = _client()  # configuration errors before any work
    result: dict[str, Any] = {"file_id": None, "row_count": None, "estimate": None, "job": None}
    # With --json the text goes nowhere; one JSON object is printed at the end.
    text = contextlib.redirect_stdout(io.StringIO()) if args.json else contextlib.nullcontext()
    async with client:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / (Path(args.file).stem[:80] + ".jsonl")
            report = await convert_file_async(args.file, out, skip_invalid=args.skip_invalid)
            if not out.exists():
                print_report(report, lang, args.json)
                return EXIT_INVALID
            with text:
                print(
                    t(
                        lang,
                        "cli.job.defaults",
                        model=model,
                        mode=mode,
                        model_default=t(lang, "cli.job.default_tag") if args.model is None else "",
                        mode_default=t(lang, "cli.job.default_tag") if args.mode is None else "",
                    )
                )
            uploaded = await client.upload(out, filename=out.name, mode=mode)
        SO_FAR["file_id"] = uploaded.file_id
        count = uploaded.row_count if uploaded.row_count is not None else report.valid
        result.update(file_id=uploaded.file_id, row_count=count)
        with text:
            print(t(lang, "cli.job.uploaded", file_id=uploaded.file_id, count=count))
        if count <= 0:
            print(t(lang, "cli.job.not_submitted_zero"), file=sys.stderr)
            return EXIT_INVALID
        est = await client.precheck(count, model, mode)
        result["estimate"] = est.model_dump(
            include={"estimated_cost", "unit_price", "currency", "balance", "sufficient", "record_count"}
        )
        short = est.sufficient is False
        with text:
            print(
                t(
                    lang,
                    "cli.job.estimate",
                    cost=format_amount(est.estimated_cost),
                    currency=est.currency or "",
                    count=count,
                    unit_price=format_amount(est.unit_price),
                    balance=format_amount(est.balance),
                )
            )
        if short:
            # The service would refuse the submit: say so, submit nothing, exit 5 (also with
            # --estimate-only: a script learns that this job cannot run yet).
            required = est.required if est.required is not None else est.estimated_cost
            gap = required - est.balance if required is not None and est.balance is not None else None
            unit = f" {est.currency}" if est.currency else ""
            print(
                t(
                    lang,
                    "cli.job.short",
                    current=format_amount(est.balance) + unit,
                    required=format_amount(required) + unit,
                    shortfall=format_amount(gap) + unit,
                ),
                file=sys.stderr,
            )
            if est.recharge_url:
                print(t(lang, "error.balance_topup", url=est.recharge_url), file=sys.stderr)
        if args.estimate_only or short:
            if not short:
                with text:
                    print(t(lang, "cli.job.estimate_only"))
            if args.json:
                _emit(result)
            return EXIT_BALANCE if short else 0
        SO_FAR["submit_sent"] = "1"
        job = await client.submit(uploaded.file_id, model, mode)
        SO_FAR["job_id"] = job.job_id
        result["job"] = job_json(job)
        with text:
            print(
                t(
                    lang,
                    "cli.job.submitted",
                    job_id=job.job_id,
                    status=locales.status_name(lang, job.state, job.status),
                )
            )
        code = 0
        if args.watch:
            with text:
                code = await _follow(client, job.job_id, args.interval, lang, result)
        if args.json:
            _emit(result)
        return code
