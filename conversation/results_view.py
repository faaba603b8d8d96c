"""A finished job's results in the chat, when the user asks (nothing is fetched before).

Results: an album of up to ALBUM images (captions: the user's row and the prompt's first
words; "next" pages through the rest), then a spreadsheet of every row — the user's row,
prompt, status, image (its name in the ZIP, or its link) or error — as XLSX (every cell text)
and CSV, then a ZIP of the images named by row when they fit in one file, else a sentence
saying why. Failed rows: the failed rows with their errors (a file when there are many).

The results are read from disk record by record (`batchjob.results`), images decoded or
downloaded into a directory of this request that is removed afterwards; memory holds only
one record and the list of image names.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import secrets
import shutil
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import locales
from batchjob import results, rowmap
from batchjob.errors import BatchJobError
from batchjob.results import IMAGE_TYPES, Outcome, ResultLimits
from conversation.channel import ALBUM, Buttons, Channel

if TYPE_CHECKING:
    from batchjob.client import BatchJobClient
    from conversation.settings import ConversationSettings
    from conversation.store import Store

log = logging.getLogger("conversation.results")

FAILED_INLINE = 20  # failed rows listed in the message; more go in a file
WORDS = 6  # of the prompt, in a caption
CAPTION_CHARS = 32


@dataclass
class Fetched:
    work: Path
    path: Path
    runs: list[tuple[int, int]]


@dataclass
class Scan:
    rows: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (row, prompt, error)
    images: list[tuple[int, int, str, str]] = field(default_factory=list)  # (row, n, kind, file or URL)
    captions: dict[int, str] = field(default_factory=dict)  # row -> prompt's first words


def _caption_words(prompt: str) -> str:
    words = prompt.split()
    text = " ".join(words[:WORDS])
    if len(text) > CAPTION_CHARS:  # text without spaces (Chinese): cut by characters
        return text[:CAPTION_CHARS] + "…"
    return text + (" …" if len(words) > WORDS else "")


def _text(v: str) -> str:
    return "'" + v if v[:1] in ("=", "+", "-", "@") else v  # a spreadsheet must not run it


def scan(
    path: Path,
    runs: list[tuple[int, int]],
    work: Path,
    limits: ResultLimits,
    *,
    files: bool,
    window: tuple[int, int] | None = None,
    on_page: Callable[[Scan], None] | None = None,
) -> Scan:
    """One pass over the results: inline images decoded into `work` (with `window`, only
    those of the album page), and with `files`, results.csv and results.xlsx written as it
    goes (cells as text). `on_page` is called once the window's images are all known (the
    album need not wait for the rest of the pass)."""
    out = Scan()
    told = False
    decoder = results.Decoder(work, limits, None if files else window)
    sheet = book = None
    writer = None
    handle = None
    if files:
        from openpyxl import Workbook
        from openpyxl.cell import WriteOnlyCell

        book = Workbook(write_only=True)
        sheet = book.create_sheet("results")
        handle = (work / "results.csv").open("w", newline="", encoding="utf-8-sig")
        writer = csv.writer(handle)
    header = ["row", "prompt", "status", "image", "error"]
    try:
        if writer is not None and sheet is not None:
            writer.writerow(header)
            sheet.append(header)
        for o in results.records(path, limits, decoder):
            row = rowmap.row_of(runs, o.record) or (o.record + 1)
            out.rows += 1
            images = _collect(out, o, row)
            if on_page is not None and not told and window is not None and len(out.images) >= window[1]:
                told = True
                on_page(_page_of(out, window))
            if writer is not None and sheet is not None:
                cells = [str(row), o.prompt, o.status, " ".join(_zip_name(row, v) for v in images), o.error]
                writer.writerow([cells[0], *(_text(c) for c in cells[1:])])
                row_cells = []
                for value in cells:
                    cell = WriteOnlyCell(sheet, value=value)
                    cell.data_type = "s"  # text, whatever it starts with: never a formula
                    row_cells.append(cell)
                sheet.append(row_cells)
    finally:
        if handle is not None:
            handle.close()
        if book is not None:
            book.save(work / "results.xlsx")
    if on_page is not None and not told and window is not None:
        on_page(_page_of(out, window))
    return out


def _page_of(found: Scan, window: tuple[int, int]) -> Scan:
    """The images of one album page (a copy: the pass goes on in its thread)."""
    images = found.images[window[0] : window[1]]
    return Scan(images=images, captions={row: found.captions.get(row, "") for row, *_ in images})


def _collect(out: Scan, o: Outcome, row: int) -> list[str]:
    """Note the record's failure and images; its images' files or links."""
    if o.status == "failed":
        out.failed.append((row, o.prompt[:200], o.error[:300]))
    values = []
    for n, image in enumerate(o.images(), 1):
        out.images.append((row, n, image.kind, image.value))
        values.append(image.value)
    if values:
        out.captions[row] = _caption_words(o.prompt)
    return values


def _zip_name(row: int, value: str) -> str:
    """An image's name in the ZIP: row-<row>[-<n>].<ext> for a file; the link itself otherwise."""
    if value.startswith(("http://", "https://")):
        return value
    p = Path(value)
    n = p.stem.split("-", 1)[1] if "-" in p.stem else "1"
    return f"row-{row}{'' if n == '1' else '-' + n}{p.suffix}"


class ResultsView:
    def __init__(
        self,
        client: BatchJobClient,
        channel: Channel,
        store: Store,
        media: Path,
        settings: ConversationSettings,
    ) -> None:
        self.client = client
        self.channel = channel
        self.store = store
        self.media = media
        self.settings = settings
        self.limits = ResultLimits(
            max_images=settings.results_max_images, max_document_bytes=settings.results_max_bytes
        )

    async def download(self, job_id: str, work: Path) -> tuple[Path | None, str]:
        """The job's results on disk, or None and the message key saying why."""
        try:
            job = await self.client.get_job(job_id)
        except BatchJobError:
            return None, "results.unavailable"
        if not job.terminal:
            return None, "results.not_finished"
        path = await results.download(
            self.client,
            job,
            work / "results.download",
            self.limits,
            allow_loopback=self.settings.unsafe_allow_loopback_urls,
        )
        return path, "" if path is not None else "results.none"

    async def _runs(self, job_id: str) -> list[tuple[int, int]]:
        rec = await self.store.job(job_id)
        return rowmap.decode((rec or {}).get("rows", ""))

    @contextlib.asynccontextmanager
    async def _fetched(self, kind: str, chat: str, lang: str, job_id: str) -> AsyncIterator[Fetched | None]:
        """A directory of this request (removed after), the job's results in it and its row
        map; None (the user told why) when there are no results to read."""
        work = self.media / f"{kind}-{secrets.token_hex(8)}"
        work.mkdir(mode=0o700)
        try:
            path, why = await self.download(job_id, work)
            if path is None:
                await self.channel.send_text(chat, locales.t(lang, why, job_id=job_id))
                yield None
            else:
                yield Fetched(work, path, await self._runs(job_id))
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def show(self, chat: str, lang: str, job_id: str, page: int = 0) -> None:
        async with self._fetched("results", chat, lang, job_id) as got:
            if got is None:
                return
            work, path, runs = got.work, got.path, got.runs
            loop = asyncio.get_running_loop()
            first: asyncio.Future[Scan] = loop.create_future()

            def on_page(part: Scan) -> None:  # in the pass's thread
                loop.call_soon_threadsafe(lambda: first.done() or first.set_result(part))

            window = (page * ALBUM, (page + 1) * ALBUM)
            passing = asyncio.ensure_future(
                asyncio.to_thread(
                    scan, path, runs, work, self.limits, files=page == 0, window=window, on_page=on_page
                )
            )
            await asyncio.wait({passing, first}, return_when=asyncio.FIRST_COMPLETED)
            if first.done():  # the page's images are known: the album goes out while the pass goes on
                await self._album(chat, lang, job_id, first.result(), work)
            try:
                found = await passing
            except results.ResultsError as e:
                await self.channel.send_text(chat, locales.t(lang, f"results.{e.reason}", job_id=job_id))
                return
            path.unlink(missing_ok=True)
            await self._page_note(chat, lang, job_id, found, page)
            if page == 0:
                await self._files(chat, lang, job_id, found, work)

    async def _local(self, kind: str, value: str, work: Path, stem: str) -> Path | None:
        """An image as a file: decoded already, or downloaded now (the URL rules apply)."""
        if kind == "image_file":
            return Path(value)
        if kind != "image_url":
            return None  # not decoded (outside this page)
        target = work / f"{stem}.download"
        try:
            await self.client.download(
                value,
                target,
                self.limits.max_image_bytes,
                allow_loopback=self.settings.unsafe_allow_loopback_urls,
                timeout_s=self.settings.url_timeout_seconds,
            )
        except Exception:  # unreachable, refused, too large: the link is in the spreadsheet
            target.unlink(missing_ok=True)
            return None
        with target.open("rb") as f:
            kind_ = results.image_type(f.read(16))
        if kind_ is None:
            target.unlink(missing_ok=True)
            return None
        final = target.with_suffix(IMAGE_TYPES[kind_])
        target.rename(final)
        return final

    async def _album(self, chat: str, lang: str, job_id: str, part: Scan, work: Path) -> None:
        album = []
        for row, n, kind, value in part.images:
            local = await self._local(kind, value, work, f"album-{row}-{n}")
            if local is not None:
                caption = locales.t(lang, "results.caption", row=row, words=part.captions.get(row, ""))
                album.append((local, caption))
        if album:
            await self.channel.send_images(chat, album)

    async def _page_note(self, chat: str, lang: str, job_id: str, found: Scan, page: int) -> None:
        """Which images the album showed, and a button for the next ones."""
        total = len(found.images)
        if total == 0:
            await self.channel.send_text(chat, locales.t(lang, "results.no_images", job_id=job_id))
            return
        first = page * ALBUM
        if first + ALBUM < total or page:
            last = min(first + ALBUM, total)
            text = locales.t(lang, "results.page", first=first + 1, last=last, count=total)
            buttons: Buttons | None = None
            if last < total:
                more = min(ALBUM, total - last)
                buttons = [[(locales.t(lang, "btn.next_images", count=more), f"o:{page + 1}:{job_id}")]]
            await self.channel.send_text(chat, text, buttons)

    async def _files(self, chat: str, lang: str, job_id: str, found: Scan, work: Path) -> None:
        await self.channel.send_document(chat, f"{job_id}-results.xlsx", work / "results.xlsx")
        await self.channel.send_document(chat, f"{job_id}-results.csv", work / "results.csv")
        if not found.images:
            return
        cap = self.settings.results_zip_max_bytes
        files: list[tuple[Path, str]] = []
        size = 0
        for row, n, kind, value in found.images:
            local = await self._local(kind, value, work, f"zip-{row}-{n}")
            if local is None:
                continue
            size += local.stat().st_size
            if size > cap:
                text = locales.t(lang, "results.zip_too_large", limit=locales.number(lang, cap // (1 << 20)))
                await self.channel.send_text(chat, text)
                return
            files.append((local, _zip_name(row, f"{row}-{n}{local.suffix}")))
        if files:
            archive = work / "images.zip"
            await asyncio.to_thread(_zip, archive, files)
            await self.channel.send_document(chat, f"{job_id}-images.zip", archive)

    async def failed(self, chat: str, lang: str, job_id: str) -> None:
        async with self._fetched("failed", chat, lang, job_id) as got:
            if got is None:
                return
            work, path, runs = got.work, got.path, got.runs
            try:
                found = await asyncio.to_thread(
                    scan, path, runs, work, self.limits, files=False, window=(0, 0)
                )
            except results.ResultsError as e:
                await self.channel.send_text(chat, locales.t(lang, f"results.{e.reason}", job_id=job_id))
                return
            rows = found.failed
            if not rows:
                await self.channel.send_text(chat, locales.t(lang, "results.no_failed", job_id=job_id))
                return
            if len(rows) <= FAILED_INLINE:
                lines = [locales.t(lang, "results.failed_head", count=len(rows), job_id=job_id)]
                lines += [locales.t(lang, "results.failed_row", row=r, error=e or "?") for r, _, e in rows]
                await self.channel.send_text(chat, "\n".join(lines))
                return
            out = work / "failed.csv"
            with out.open("w", newline="", encoding="utf-8-sig") as f:
                w = csv.writer(f)
                w.writerow(["row", "prompt", "error"])
                w.writerows([str(r), _text(p), _text(e)] for r, p, e in rows)
            await self.channel.send_text(
                chat, locales.t(lang, "results.failed_file", count=len(rows), job_id=job_id)
            )
            await self.channel.send_document(chat, f"{job_id}-failed-rows.csv", out)


def _zip(archive: Path, files: list[tuple[Path, str]]) -> None:
    # Stored, not deflated: PNG, JPEG and WebP are compressed already.
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for path, name in files:
            z.write(path, name)
