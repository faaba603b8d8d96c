"""`batchjob results JOB_ID -o DIR`: a finished job's images and a manifest of every record.

Writes DIR/images/<record>-<n>.<png|jpg|webp> (inline images decoded, image links
downloaded: the service's own with its token, any other public host without it) and
DIR/manifest.csv + DIR/manifest.jsonl (record, status, prompt, error, image files, links).
Resumable: images already in DIR are kept, not fetched again; the manifest is replaced
only once complete.
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import orjson

import locales
from batchjob import results
from batchjob.results import IMAGE_TYPES, Outcome, ResultLimits


def register(sub: Any) -> None:
    r = sub.add_parser(
        "results",
        help="download a finished job's images and outcomes",
        description="Download a finished job's images into DIR/images and write DIR/manifest.csv and "
        "DIR/manifest.jsonl: every record's number, status, prompt, error, image files and links. "
        "Run it again to resume: images already downloaded are kept.",
    )
    r.add_argument("job_id", metavar="JOB_ID")
    r.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="where to write")
    r.add_argument("--json", action="store_true", help="also print the manifest as JSON lines")
    r.add_argument("--failed-only", action="store_true", help="only the failed records (no downloads)")


def _existing(images: Path, stem: str) -> Path | None:
    for ext in IMAGE_TYPES.values():
        if (images / f"{stem}{ext}").is_file():
            return images / f"{stem}{ext}"
    return None


async def _fetch_image(client: Any, url: str, images: Path, stem: str, limits: ResultLimits) -> Path | None:
    """One image link to images/<stem>.<ext>, its type told by its bytes; None when it is no
    image, too large, or not reachable."""
    from batchjob.errors import BatchJobError
    from batchjob.fetch import FetchError

    if (have := _existing(images, stem)) is not None:
        return have  # downloaded by an earlier run
    tmp = images / f".{stem}.{secrets.token_hex(4)}.part"
    try:
        await client.download(url, tmp, limits.max_image_bytes)
        with tmp.open("rb") as f:
            kind = results.image_type(f.read(16))
        if kind is None:
            return None
        final = images / f"{stem}{IMAGE_TYPES[kind]}"
        os.replace(tmp, final)
        return final
    except (BatchJobError, FetchError, OSError):
        return None
    finally:
        tmp.unlink(missing_ok=True)


def _row(o: Outcome, files: list[str], links: list[str]) -> dict[str, Any]:
    return {
        "record": o.record + 1,
        "key": o.key,
        "status": o.status,
        "prompt": o.prompt,
        "error": o.error,
        "images": files,
        "links": links,
    }


def _cell(v: Any) -> str:
    s = " ".join(v) if isinstance(v, list) else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@") else s  # a spreadsheet must not run it


async def command(args: argparse.Namespace, lang: str) -> int:
    from batchjob.cli import CliError
    from batchjob.cli_jobs import EXIT_REJECTED, _client

    t = locales.t
    limits = ResultLimits()
    out: Path = args.output
    images = out / "images"
    async with _client() as client:
        job = await client.get_job(args.job_id)
        if not job.terminal:
            raise CliError(
                t(lang, "cli.results.not_finished", job_id=job.job_id, status=job.status), EXIT_REJECTED
            )
        images.mkdir(parents=True, exist_ok=True)
        doc = out / f".results-{secrets.token_hex(4)}.part"
        try:
            path = await results.download(client, job, doc, limits)
            if path is None:
                print(t(lang, "cli.results.none", job_id=job.job_id), file=sys.stderr)
                return 0
            rows = []
            shown = sys.stderr.isatty()
            decoder = None if args.failed_only else results.Decoder(images, limits)
            for o in results.records(path, limits, decoder):
                if args.failed_only and o.status != "failed":
                    continue
                files = [Path(x.value).name for x in o.outputs if x.kind == "image_file"]
                links = [x.value for x in o.outputs if x.kind == "image_url"]
                for n, url in enumerate(links, len(files) + 1):
                    if args.failed_only:
                        break
                    got = await _fetch_image(client, url, images, f"{o.record + 1}-{n}", limits)
                    if got is not None:
                        files.append(got.name)
                rows.append(_row(o, files, links))
                if shown:
                    print(f"\r{t(lang, 'cli.results.progress', count=len(rows))}", end="", file=sys.stderr)
            if shown:
                print(file=sys.stderr)
        except results.ResultsError as e:
            raise CliError(t(lang, f"cli.results.{e.reason}", job_id=job.job_id), EXIT_REJECTED) from None
        finally:
            doc.unlink(missing_ok=True)
    _write_manifest(out, rows)
    if args.json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
    done = sum(len(r["images"]) for r in rows)
    print(t(lang, "cli.results.done", count=len(rows), images=done, path=str(out)), file=sys.stderr)
    return 0


def _write_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    """manifest.csv and manifest.jsonl, each replaced only once complete."""
    fields = ["record", "key", "status", "prompt", "error", "images", "links"]
    tmp = out / f".manifest.{secrets.token_hex(4)}"
    with tmp.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for row in rows:
            w.writerow([_cell(row[k]) for k in fields])
    os.replace(tmp, out / "manifest.csv")
    with tmp.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
    os.replace(tmp, out / "manifest.jsonl")
