"""Find a file's real format and text encoding from its bytes, not its name.

zip → xlsx/ods (by their own manifest), OLE2 → xls, otherwise text → jsonl or
csv/tsv (by the first non-blank character and the delimiter that splits the first
lines most consistently). Zip archives are bounded here, before any parser sees them.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import os
import re
import stat
import zipfile
from dataclasses import dataclass

from batchjob.input.limits import InputError, Limits

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")  # below space, but tab, CR and LF

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_BINARY_MAGIC = {
    b"%PDF": "pdf",
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
    b"GIF8": "gif",
    b"\x1f\x8b": "gzip",
    b"Rar!": "rar",
    b"7z\xbc\xaf": "7z",
    b"{\\rtf": "rtf",
}
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
ENCODINGS_TRIED = ("utf-8", "utf-16", "gb18030")
DELIMITERS = (",", "\t", ";")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Sniffed:
    format: str  # csv | tsv | jsonl | xlsx | xls | ods
    encoding: str | None = None  # text formats only
    delimiter: str | None = None  # csv/tsv only
    fallbacks: tuple[str, ...] = ()  # encodings to retry with if a later byte fails


def sniff(path: str | os.PathLike[str], limits: Limits) -> Sniffed:
    try:
        st = os.stat(path)
    except OSError:
        raise InputError("file_missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError("file_missing")
    size = st.st_size
    if size == 0:
        raise InputError("file_empty")
    if size > limits.max_file_bytes:
        raise InputError("limit_file_size", size=size, limit=limits.max_file_bytes)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Sniffed(_zip_format(path, limits))
    if head.startswith(OLE2_MAGIC):
        return Sniffed("xls")
    for magic, name in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise InputError("unsupported_file_type", detected=name)
    encodings = detect_encoding(path)
    return _text_format(path, encodings)


def _zip_format(path: str | os.PathLike[str], limits: Limits) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > limits.max_zip_members:
                raise InputError("limit_zip_members", count=len(infos), limit=limits.max_zip_members)
            unpacked = 0
            for info in infos:
                unpacked += info.file_size
                # Tiny members compress absurdly well legitimately; judge the big ones.
                if info.file_size > _CHUNK and info.file_size > limits.max_zip_ratio * max(
                    info.compress_size, 1
                ):
                    raise InputError(
                        "limit_zip_ratio",
                        member=info.filename[:80],
                        ratio=round(info.file_size / max(info.compress_size, 1)),
                        limit=round(limits.max_zip_ratio),
                    )
            if unpacked > limits.max_unpacked_bytes:
                raise InputError("limit_zip_unpacked", size=unpacked, limit=limits.max_unpacked_bytes)
            names = {i.filename for i in infos}
            if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
                return "xlsx"
            if "mimetype" in names:
                mime = z.read("mimetype")[:100]
                if mime.startswith(b"application/vnd.oasis.opendocument.spreadsheet"):
                    return "ods"
                raise InputError("unsupported_file_type", detected=mime.decode("ascii", "replace"))
            if any(n.startswith("word/") for n in names):
                raise InputError("unsupported_file_type", detected="docx")
            raise InputError("unsupported_file_type", detected="zip")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, OSError):
        # A damaged or exotic archive (zipfile raises all of these on crafted headers).
        raise InputError("unsupported_file_type", detected="zip") from None


def detect_encoding(path: str | os.PathLike[str]) -> list[str]:
    """Candidate encodings, most likely first: a BOM decides; else UTF-8, then GB18030.

    Only the head is checked here; the parser reads the whole file strictly and falls
    back to the next candidate if a later byte does not decode, so a large file is not
    decoded twice in the common case.
    """
    with open(path, "rb") as f:
        head = f.read(_CHUNK)
    for bom, name in _BOMS:
        if head.startswith(bom):
            return [name]
    sample = head[:4096]
    if sample.count(b"\x00") > len(sample) // 4:
        # UTF-16 without a BOM: NULs in every other byte of ASCII text.
        even = sample[0::2].count(b"\x00")
        odd = sample[1::2].count(b"\x00")
        return ["utf-16-le" if odd > even else "utf-16-be"]
    if b"\x00" in head:
        raise InputError("unsupported_file_type", detected="binary")
    candidates = [name for name in ("utf-8", "gb18030") if _head_decodes(head, name)]
    if not candidates:
        _fail()
    return candidates


def _head_decodes(head: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _fail() -> str:
    raise InputError("encoding_unknown", tried=list(ENCODINGS_TRIED))


def _text_format(path: str | os.PathLike[str], encodings: list[str]) -> Sniffed:
    encoding, fallbacks = encodings[0], tuple(encodings[1:])
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        sample = f.read(64 * 1024)
    stripped = sample.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise InputError("file_empty")
    if stripped[0] == "{":
        return Sniffed("jsonl", encoding, None, fallbacks)
    if stripped[0] == "[":
        raise InputError("unsupported_file_type", detected="json")
    if _CONTROL.search(sample, 0, 4096):
        raise InputError("unsupported_file_type", detected="binary")
    delimiter = pick_delimiter(stripped)
    return Sniffed("tsv" if delimiter == "\t" else "csv", encoding, delimiter, fallbacks)


def pick_delimiter(sample: str) -> str:
    """The delimiter giving the most columns, consistently, over the first lines."""
    # Drop a possibly cut last line so quotes are balanced as far as possible.
    if len(sample) >= 64 * 1024 and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    best, best_score = ",", (0, 0)
    for d in DELIMITERS:
        try:
            # The first 20 rows only: reading the whole sample three times was most of a
            # small file's reading.
            rows = list(itertools.islice(filter(None, csv.reader(io.StringIO(sample), delimiter=d)), 20))
        except csv.Error:
            continue
        if not rows:
            continue
        widths = [len(r) for r in rows]
        first = widths[0]
        consistent = sum(1 for w in widths if w == first)
        score = (consistent if first > 1 else 0, first)
        if score > best_score:
            best, best_score = d, score
    return best
