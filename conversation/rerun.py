"""Run the failed rows of a job again: a new input made of exactly those rows of the original.

The job keeps where its input came from (the channel's file handle, a URL or a path) and
which of the user's rows became which records. On the user's word (the summary's button) the
results say which rows failed, the original is fetched again from its source, and those rows
are copied out of it by the parse worker (`batchjob/input/subset.py`: same columns, the
original row number as a last column). The new file then goes through the ordinary flow —
report, estimate, confirmation — so no job is made without the user's confirmation.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from batchjob import rowmap
from batchjob.input import isolation
from conversation import resolve
from conversation.channel import DownloadError
from conversation.events import Event, FileReady, ResolveFailed
from conversation.results_view import scan

if TYPE_CHECKING:
    from conversation.runner import Runner


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for row in rows:
        if runs and runs[-1][0] + runs[-1][1] == row:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((row, 1))
    return runs


async def failed_rows(runner: Runner, job_id: str, dest: Path) -> Event:
    rec = await runner.store.job(job_id) or {}
    try:
        source = json.loads(rec.get("src") or "null")
    except ValueError:
        source = None
    runs = rowmap.decode(rec.get("rows"))
    if not isinstance(source, dict) or source.get("kind") not in ("channel", "url", "path") or not runs:
        return ResolveFailed("no_source")
    work = runner.media / f"rerun-{secrets.token_hex(8)}"
    work.mkdir(mode=0o700)
    try:
        path, _why = await runner.results.download(job_id, work)
        if path is None:
            return ResolveFailed("no_results")
        found = await asyncio.to_thread(
            scan, path, runs, work, runner.results.limits, files=False, window=(0, 0)
        )
        failed = sorted({row for row, _, _ in found.failed})
        if not failed:
            return ResolveFailed("nothing_failed")
        name = str(source.get("name") or "input")
        original = work / ("original" + Path(name).suffix[:10])
        if not await _fetch_original(runner, source, original):
            return ResolveFailed("original_gone")
        out = dest.with_suffix(".jsonl" if original.suffix.lower() == ".jsonl" else ".csv")
        report = await isolation.subset_file_async(original, out, _runs(failed), runner.limits)
        if report.fatal is not None or report.valid != len(failed):
            out.unlink(missing_ok=True)
            return ResolveFailed("original_changed")  # the rows are no longer those of the job
        return FileReady(str(out), f"{Path(name).stem[:80]}-failed-rows{out.suffix}")
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


async def _fetch_original(runner: Runner, source: dict[str, object], dest: Path) -> bool:
    kind, ref = source.get("kind"), str(source.get("ref") or "")
    settings = runner.settings
    try:
        if kind == "channel":
            await runner.channel.download(ref, dest, settings.max_download_bytes)
        elif kind == "url":
            await resolve.fetch_url(
                ref,
                dest,
                max_bytes=settings.max_download_bytes,
                timeout_s=settings.url_timeout_seconds,
                allow_loopback=settings.unsafe_allow_loopback_urls,
            )
        else:
            await asyncio.to_thread(
                resolve.open_path, ref, settings.local_path_roots, dest, settings.max_download_bytes
            )
    except (DownloadError, resolve.ResolveError, OSError):
        return False
    return dest.is_file()
