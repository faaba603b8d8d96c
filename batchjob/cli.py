"""`batchjob`: inspect, convert and template prompt files, and talk to the service.

Exit codes: 0 success; 1 the input file is invalid or unusable; 2 usage error;
3-9 service errors (see `batchjob.cli_jobs`); 70 unexpected internal error.
Every failure is a line on stderr (and what was done so far), never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any

import orjson

import locales
from batchjob.input.limits import Limits

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70
MAX_ERRORS_SHOWN = 20


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def example_path() -> Path:
    return Path(__file__).resolve().parent / "examples" / "prompts.csv"


def _default_lang() -> str:
    return locales.normalize_language(os.environ.get("BATCHJOB_LANG") or os.environ.get("LANG"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchjob",
        description="Prompt files for the BatchJob batch image service: check them, convert "
        "them to the service's JSONL, write starter templates, submit and follow jobs.",
        epilog="Exit codes: 0 ok, 1 invalid or unusable input, 2 usage error, 3 configuration, "
        "4 authentication, 5 insufficient balance, 6 rejected by the service, 7 service "
        "unavailable, 8 submit outcome unknown (never repeated), 9 service answers not "
        "understood (doctor), 70 internal error; with --watch, the job's end: 0 completed, "
        "10 partially failed, 11 failed, 12 cancelled or expired. "
        "Service commands read BATCHJOB_BASE_URL and BATCHJOB_BEARER_TOKEN; limits "
        "BATCHJOB_LIMIT_* (see README).",
    )
    p.add_argument(
        "--lang",
        choices=locales.LANGUAGES,
        default=None,
        help="language of messages (default: from BATCHJOB_LANG or LANG)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ins = sub.add_parser(
        "inspect",
        help="check a file and report every row",
        description="Read FILE (csv, tsv, xlsx, xls, ods, jsonl), validate every "
        "row and print a report. Exit 0 when every row is valid, 1 otherwise.",
    )
    src = ins.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", metavar="FILE", help="the prompt file")
    src.add_argument("--example", action="store_true", help="inspect the bundled example file")
    ins.add_argument("--json", action="store_true", help="print one JSON object")

    conv = sub.add_parser(
        "convert",
        help="write the service's canonical JSONL",
        description="Validate FILE and write canonical JSONL to OUT "
        "atomically. Nothing is written when the file is invalid, unless "
        "--skip-invalid is given and at least one row is valid.",
    )
    conv.add_argument("file", metavar="FILE")
    conv.add_argument(
        "-o", "--output", required=True, metavar="OUT.jsonl", help="the JSONL to write; - for stdout"
    )
    conv.add_argument(
        "--skip-invalid", action="store_true", help="write only the valid rows instead of failing"
    )
    conv.add_argument("--json", action="store_true", help="print the report as JSON")

    tpl = sub.add_parser(
        "template",
        help="write a starter file or the format guide",
        description="Write a template with a header and example rows, or the format guide (Markdown).",
    )
    from batchjob.templates import KINDS

    tpl.add_argument("--kind", choices=KINDS, required=True)
    tpl.add_argument("-o", "--output", required=True, metavar="PATH")
    tpl.add_argument(
        "--lang",
        dest="template_lang",
        choices=locales.LANGUAGES,
        default=None,
        help="language of the template (default: --lang)",
    )
    from batchjob import cli_jobs

    cli_jobs.register(sub)
    from batchjob import cli_results

    cli_results.register(sub)
    from batchjob import add_version_option

    add_version_option(p)
    return p


def _limits() -> Limits:
    try:
        return Limits.from_env()
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None


def cmd_inspect(args: argparse.Namespace, lang: str) -> int:
    from batchjob.input.isolation import read_in_child

    path = example_path() if args.example else Path(args.file)
    warm = functools.partial(locales.prepare, lang)  # while the child reads
    report = read_in_child("inspect", path, limits=_limits(), meanwhile=warm)  # forked: no secret here
    print_report(report, lang, args.json)
    return EXIT_OK if report.ok else EXIT_INVALID


def cmd_convert(args: argparse.Namespace, lang: str) -> int:
    if args.output == "-":
        return _convert_to_stdout(args, lang)
    return _convert(args, lang, Path(args.output), sys.stdout)


def _convert_to_stdout(args: argparse.Namespace, lang: str) -> int:
    """`-o -`: the JSONL on stdout, the report on stderr (so the two never mix)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="batchjob-convert-") as tmp:
        out = Path(tmp) / "out.jsonl"
        code = _convert(args, lang, out, sys.stderr)
        if out.exists():
            with open(out, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
    return code


def _convert(args: argparse.Namespace, lang: str, out: Path, report_to: Any) -> int:
    from batchjob.input.isolation import read_in_child

    if not out.parent.is_dir():
        raise CliError(locales.t(lang, "cli.error.write", out=out, reason="no such directory"), EXIT_USAGE)
    warm = functools.partial(locales.prepare, lang)  # while the child reads
    try:
        report = read_in_child(
            "convert", args.file, out, skip_invalid=args.skip_invalid, limits=_limits(), meanwhile=warm
        )
    except OSError as e:
        raise CliError(locales.t(lang, "cli.error.write", out=out, reason=e.strerror), 1) from None
    written = report.usable and (report.ok or args.skip_invalid)
    if args.json:
        d = report.to_dict(lang)
        d["output"] = (str(out) if args.output != "-" else "-") if written else None
        report_to.write(orjson.dumps(d).decode() + "\n")
    else:
        with contextlib.redirect_stdout(report_to):
            print_report(report, lang, False, verdict=False)
            if written:
                shown = out if args.output != "-" else "stdout"
                print(locales.t(lang, "cli.convert.done", count=report.valid, out=shown))
                if report.invalid:
                    print(locales.t(lang, "cli.convert.skipped", count=report.invalid))
        if not written:
            print(_verdict(report, lang), file=sys.stderr)
            print(locales.t(lang, "cli.convert.not_written"), file=sys.stderr)
    return EXIT_OK if written else EXIT_INVALID


def cmd_template(args: argparse.Namespace, lang: str) -> int:
    from batchjob import templates

    tlang = args.template_lang or lang
    try:
        out = templates.write(args.kind, tlang, args.output)
    except OSError as e:
        raise CliError(
            locales.t(lang, "cli.error.write", out=args.output, reason=e.strerror), EXIT_USAGE
        ) from None
    print(locales.t(lang, "cli.template.done", kind=args.kind, out=out))
    return EXIT_OK


def _verdict(report: Any, lang: str) -> str:
    from batchjob.input.messages import issue_message

    if report.fatal is not None:
        return locales.t(lang, "cli.report.fatal", message=issue_message(report.fatal, lang))
    if report.ok:
        return locales.t(lang, "cli.report.ok", count=report.valid)
    valid = locales.number(lang, report.valid)
    return locales.t(lang, "cli.report.invalid", count=report.invalid, valid=valid)


def print_report(report: Any, lang: str, as_json: bool, verdict: bool = True) -> None:
    from batchjob.input.messages import issue_message

    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(lang)).decode() + "\n")
        return
    t = locales.t
    if report.format is None and report.fatal is not None:
        # Nothing was read (missing, empty, not a table): the problem below says why, and a
        # title claiming an unknown format would only mislead.
        print(t(lang, "cli.report.title_unread", path=report.path))
    else:
        print(
            t(
                lang,
                "cli.report.title",
                path=report.path,
                format=report.format or t(lang, "cli.report.format_unknown"),
                encoding=t(lang, "cli.report.sep") + report.encoding if report.encoding else "",
                sheet=t(lang, "cli.report.sep") + report.sheet if report.sheet else "",
            )
        )
    if report.kind:
        kind = t(lang, f"kind.{report.kind}") if locales.has(f"kind.{report.kind}") else report.kind
        print(t(lang, "cli.report.kind", kind=kind))
    if report.header_row:
        print(t(lang, "cli.report.header", row=report.header_row))
    if report.columns:
        cols = ", ".join(f"{c.name} → {c.field}" if c.field else f"{c.name} → -" for c in report.columns)
        print(t(lang, "cli.report.columns", columns=cols))
    if report.fatal is None:
        print(
            t(
                lang,
                "cli.report.rows",
                total=locales.number(lang, report.total),  # quantities, grouped as counts are
                valid=locales.number(lang, report.valid),
                invalid=locales.number(lang, report.invalid),
                skipped=locales.number(lang, report.skipped),
            )
        )
    for e in report.errors[:MAX_ERRORS_SHOWN]:
        print("  " + issue_message(e, lang))
    if len(report.errors) > MAX_ERRORS_SHOWN:
        print("  " + t(lang, "cli.report.more_errors", count=len(report.errors) - MAX_ERRORS_SHOWN))
    if report.warnings:
        print(t(lang, "cli.report.warnings"))
        shown: dict[str, int] = {}
        for w in report.warnings:
            shown[w.code] = shown.get(w.code, 0) + 1
            if shown[w.code] <= 5:
                print("  " + issue_message(w, lang))
        for code, count in report.warning_counts.items():
            if count > 5:
                print(
                    "  "
                    + t(
                        lang,
                        "cli.report.more_warnings",
                        count=count,
                        code=t(lang, f"input.{code}", row="…", column="…"),
                    )
                )
    if verdict:
        print(_verdict(report, lang))


COMMANDS = {"inspect": cmd_inspect, "convert": cmd_convert, "template": cmd_template}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    lang = args.lang or _default_lang()
    try:
        if args.command in COMMANDS:
            return COMMANDS[args.command](args, lang)
        from batchjob import cli_jobs

        return cli_jobs.run(args, lang)
    except CliError as e:
        print(f"batchjob: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print(f"batchjob: {locales.t(lang, 'cli.error.interrupted')}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # one line, never a traceback
        from batchjob.cli_jobs import SO_FAR, so_far

        # "Nothing was changed" only when nothing was: else what was done so far.
        key = "cli.error.internal_partial" if SO_FAR else "cli.error.internal"
        print(f"batchjob: {locales.t(lang, key, kind=type(e).__name__)}{so_far(lang)}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    # Run the imported module, not __main__, so its classes are the ones other modules see.
    from batchjob.cli import main as _main

    sys.exit(_main())
