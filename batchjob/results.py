"""A finished job's per-record outcomes, wherever the service puts them.

Sources, in order: a results file the job names (`output_file_url`, `results_url`,
`output_url`, … — `shapes.SPELLINGS["results_url"]`), then the summary behind
`output_summary_url`. Each is downloaded to disk (capped; the token only to the service's own
origin, anything else through `batchjob.fetch`: public hosts only) and read from there record
by record — JSON Lines, or a JSON document whose records are a top-level list or a list under
`records`, `results`, `items`, `data`, `outputs` — with ijson, so neither the document nor the
list is ever whole in memory. Per record: index or key, status, error, prompt, outputs: image
URLs (`image_url`, `image_urls`, `images[].url`, `outputs[].url`, …), Gemini/Vertex response
parts (`inlineData` base64, decoded to a file as the record goes by; `fileData.fileUri`) and
text parts. Nothing here is trusted: wrong types are skipped, sizes are capped, an image is
kept only when its bytes are PNG, JPEG or WebP.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import orjson

from batchjob import shapes

if TYPE_CHECKING:
    from batchjob.client import BatchJobClient
    from batchjob.models import Job

IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
RECORD_LISTS = ("records", "results", "items", "data", "outputs", "responses")
SUCCEEDED = {"succeeded", "success", "successful", "completed", "complete", "done", "ok", "finished"}
FAILED = {"failed", "failure", "error", "errored", "cancelled", "canceled", "expired", "rejected"}
LINE_CAP = 64 << 20  # a JSON Lines record (it may carry base64 images) is at most this long
URL_KEYS = ("image_url", "imageUrl", "url", "uri", "image_uri", "imageUri", "output_url", "outputUrl")


@dataclass(frozen=True)
class ResultLimits:
    max_document_bytes: int = 1 << 30  # a results file, on disk
    max_records: int = 1_000_000
    max_image_bytes: int = 20 << 20  # one image, decoded or downloaded
    max_images: int = 100_000
    max_text: int = 2_000  # of an error, a prompt or a text part


@dataclass
class Output:
    kind: str  # image_url | image_file | image_skipped (not decoded: outside a window) | text
    value: str  # the URL, the decoded file's path, or the text
    mime: str = ""


@dataclass
class Outcome:
    position: int  # 0-based place in the results file
    index: int | None  # the record's index as the service gives it
    key: str  # custom id / key, when given
    status: str  # succeeded | failed | unknown
    error: str = ""
    prompt: str = ""
    outputs: list[Output] = field(default_factory=list)

    @property
    def record(self) -> int:
        """The record this outcome is about: the service's index, else its place."""
        return self.index if self.index is not None else self.position

    def images(self) -> list[Output]:
        return [o for o in self.outputs if o.kind in ("image_url", "image_file", "image_skipped")]


class ResultsError(Exception):
    def __init__(self, reason: str) -> None:  # malformed | too_many
        super().__init__(reason)
        self.reason = reason


def image_type(head: bytes) -> str | None:
    """The image type its first bytes say (never what a header or a field claims)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _text(v: Any, limit: int) -> str:
    if isinstance(v, str):
        return v[:limit]
    if isinstance(v, dict):
        for k in ("message", "msg", "detail", "error", "code"):
            if isinstance(v.get(k), str | int):
                return str(v[k])[:limit]
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return ""


def _index(d: dict[str, Any]) -> int | None:
    for k in ("index", "record_index", "recordIndex", "line", "line_number", "row", "position"):
        v = d.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 40:
            return v
        if isinstance(v, str) and v.isdigit() and len(v) < 12:
            return int(v)
    return None


def _prompt(d: dict[str, Any], limit: int) -> str:
    p = d.get("prompt")
    if isinstance(p, str):
        return p[:limit]
    req = d.get("request")
    contents = req.get("contents") if isinstance(req, dict) else None
    if isinstance(contents, list):
        for c in contents:
            for part in (c.get("parts") or []) if isinstance(c, dict) else []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    return part["text"][:limit]
    return ""


def _urls(v: Any) -> Iterator[str]:
    """Image URLs in a value: a string, a list of strings, or objects with a URL field."""
    if isinstance(v, str):
        if v.startswith(("http://", "https://")):
            yield v
    elif isinstance(v, list):
        for item in v[:1000]:
            yield from _urls(item)
    elif isinstance(v, dict):
        for k in URL_KEYS:
            if isinstance(v.get(k), str):
                yield from _urls(v[k])
                return


def _parts(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Gemini/Vertex response parts: response.candidates[].content.parts[] (or without
    `response`)."""
    resp = d.get("response", d)
    cands = resp.get("candidates") if isinstance(resp, dict) else None
    for cand in cands[:8] if isinstance(cands, list) else []:
        content = cand.get("content") if isinstance(cand, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts[:64] if isinstance(parts, list) else []:
            if isinstance(part, dict):
                yield part


class Decoder:
    """Base64 images written to `out` as records go by: `<record>-<n>.<ext>`, atomically.
    With `window` (first, end) only the inline images numbered first..end-1 in the whole
    file are decoded; the others are counted as "image_skipped" (a page of an album)."""

    def __init__(self, out: Path, limits: ResultLimits, window: tuple[int, int] | None = None) -> None:
        self.out = out
        self.limits = limits
        self.window = window
        self.seen = 0
        self.written = 0

    def image(self, record: int, n: int, data: str) -> Output | None:
        self.seen += 1
        if self.window is not None and not self.window[0] < self.seen <= self.window[1]:
            return Output("image_skipped", "")
        for mime, ext in IMAGE_TYPES.items():  # written by an earlier run: kept as it is
            if (kept := self.out / f"{record + 1}-{n}{ext}").is_file():
                return Output("image_file", str(kept), mime)
        if self.written >= self.limits.max_images or len(data) > self.limits.max_image_bytes * 4 // 3 + 8:
            return None
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
        mime = image_type(raw[:16])
        if mime is None:
            return None
        final = self.out / f"{record + 1}-{n}{IMAGE_TYPES[mime]}"
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            os.replace(tmp, final)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return None
        self.written += 1
        return Output("image_file", str(final), mime)


def outcome(raw: Any, position: int, limits: ResultLimits, decoder: Decoder | None = None) -> Outcome | None:
    """One record's outcome, from whatever shape the service gave it; None for no record."""
    if not isinstance(raw, dict):
        return None
    d = raw
    index = _index(d)
    key = _text(d.get("custom_id") or d.get("customId") or d.get("key") or d.get("id") or "", 200)
    error = _text(d.get("error") or d.get("error_message") or d.get("errorMessage") or "", limits.max_text)
    word = shapes.text(d.get("status") or d.get("state"), 64) or ""
    out = Outcome(position, index, key, "unknown", error, _prompt(d, limits.max_text))
    record = index if index is not None else position
    seen: set[str] = set()
    for k in ("image_url", "imageUrl", "image_urls", "imageUrls", "images", "outputs", "output", "urls"):
        for url in _urls(d.get(k)):
            if url not in seen and len(seen) < 64:
                seen.add(url)
                out.outputs.append(Output("image_url", url[:2048]))
    n = 0
    for part in _parts(d):
        inline = part.get("inlineData") or part.get("inline_data")
        file_data = part.get("fileData") or part.get("file_data")
        if isinstance(inline, dict) and isinstance(inline.get("data"), str) and decoder is not None:
            n += 1
            image = decoder.image(record, n, inline["data"])
            if image is not None:
                out.outputs.append(image)
        elif isinstance(file_data, dict):
            uri = file_data.get("fileUri") or file_data.get("file_uri")
            if isinstance(uri, str) and uri.startswith(("http://", "https://")):
                out.outputs.append(Output("image_url", uri[:2048], str(file_data.get("mimeType") or "")))
        elif isinstance(part.get("text"), str) and part["text"].strip():
            out.outputs.append(Output("text", part["text"][: limits.max_text]))
    lowered = word.lower()
    if lowered in FAILED or (error and lowered not in SUCCEEDED):
        out.status = "failed"
    elif lowered in SUCCEEDED or out.outputs:
        out.status = "succeeded"
    return out


def _json_prefix(f: BinaryIO) -> str | None:
    """Where the records are in a JSON document: "item" (a top-level list) or "<key>.item"."""
    import ijson

    try:
        for prefix, event, value in ijson.parse(f):
            if prefix == "" and event == "start_array":
                return "item"
            if event == "map_key" and prefix == "" and value in RECORD_LISTS:
                return f"{value}.item"
    except ijson.JSONError:
        raise ResultsError("malformed") from None
    return None


def records(path: Path, limits: ResultLimits, decoder: Decoder | None = None) -> Iterator[Outcome]:
    """The outcomes in a downloaded results file (JSON Lines or a JSON document), one at a time."""

    with path.open("rb") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if not head:
            return
        lines = head[:1] == b"{" and _is_jsonl(f)
        f.seek(0)
        position = 0
        for raw in _json_lines(f) if lines else _json_items(f):
            got = outcome(raw, position, limits, decoder)
            if got is not None:
                yield got
                position += 1
                if position >= limits.max_records:
                    raise ResultsError("too_many")


def _json_lines(f: BinaryIO) -> Iterator[Any]:
    while line := f.readline(LINE_CAP):
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ResultsError("malformed") from None


def _json_items(f: BinaryIO) -> Iterator[Any]:
    """The records of a JSON document, one at a time (ijson: never the whole list)."""
    import ijson

    prefix = _json_prefix(f)
    if prefix is None:
        raise ResultsError("malformed")
    f.seek(0)
    try:
        yield from ijson.items(f, prefix, use_float=True)
    except ijson.JSONError:
        raise ResultsError("malformed") from None


def _is_jsonl(f: BinaryIO) -> bool:
    """JSON Lines: the first line is a whole JSON object, and another line follows it, or it
    is the only line and holds no list of records (then it is the one record)."""
    first = f.readline(LINE_CAP)
    try:
        obj = orjson.loads(first)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(obj, dict):
        return False
    for line in f:
        if line.strip():
            return True
    return not any(isinstance(obj.get(k), list) for k in RECORD_LISTS)


async def download(
    client: BatchJobClient, job: Job, dest: Path, limits: ResultLimits, *, allow_loopback: bool = False
) -> Path | None:
    """The job's results, saved to `dest`: its results file when it names one that can be
    fetched, else its summary. None when the service keeps neither (or both fail)."""
    from batchjob.errors import BatchJobError
    from batchjob.fetch import FetchError

    # A file named by id is read from the service's files endpoint (as OpenAI-style batch
    # services serve output files).
    by_id = f"/v1/batch/files/{quote(job.result_file_id, safe='')}/content" if job.result_file_id else None
    for url in (job.results_url, by_id, job.output_summary_url):
        if not url:
            continue
        try:
            return await client.download(url, dest, limits.max_document_bytes, allow_loopback=allow_loopback)
        except (BatchJobError, FetchError):
            continue
    return None
