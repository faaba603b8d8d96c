"""Which row of the user's file each record of a job came from.

The service numbers a job's records from 0 in the order of the uploaded lines; people know
their rows (a spreadsheet's row numbers, a JSONL file's line numbers). The inspection
records the rows it turned into lines as runs [first row, count]; kept here as short text
("2+40,44+100"), so a job's map is one small Redis value, not a list per record. A file
whose rows are scattered (many invalid rows in between) has many runs: its map is kept as
"z:" + base64(zlib(runs as gaps)) — 200,000 rows with every other one invalid take ~1 KB.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from bisect import bisect_right

PLAIN_MAX = 4_096  # longer maps are compressed
MAX_STORED = 256 * 1024  # a map that stays longer than this is not kept: line numbers instead


def encode(runs: list[list[int]] | list[tuple[int, int]]) -> str:
    kept = [(int(first), int(n)) for first, n in runs if int(n) > 0]
    text = ",".join(f"{first}+{n}" for first, n in kept)
    if len(text) <= PLAIN_MAX:
        return text
    # Each run as its gap after the previous one: small, repetitive numbers compress well.
    gaps, end = [], 0
    for first, n in kept:
        gaps.append(f"{first - end}+{n}")
        end = first + n
    packed = "z:" + base64.b64encode(zlib.compress(",".join(gaps).encode(), 9)).decode()
    return packed if len(packed) <= MAX_STORED else ""


def decode(text: str | bytes | None) -> list[tuple[int, int]]:
    """Runs from text; anything malformed gives no map (the caller falls back to line numbers)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    text = text or ""
    gaps = text.startswith("z:")
    if gaps:
        try:
            # Bounded: a map never holds more than the records a job may have.
            text = (
                zlib.decompressobj().decompress(base64.b64decode(text[2:], validate=True), 64 << 20).decode()
            )
        except (binascii.Error, ValueError, zlib.error, UnicodeDecodeError):
            return []
    runs: list[tuple[int, int]] = []
    end = 0
    for part in text.split(","):
        first, _, n = part.partition("+")
        if not (first.isdigit() and n.isdigit()):
            return []
        start = end + int(first) if gaps else int(first)
        runs.append((start, int(n)))
        end = start + int(n)
    return runs


def row_of(runs: list[tuple[int, int]], index: int) -> int | None:
    """The user's row of record `index` (0-based), or None when the map does not reach it."""
    if index < 0 or not runs:
        return None
    starts, total = [], 0
    for _first, n in runs:
        starts.append(total)
        total += n
    if index >= total:
        return None
    i = bisect_right(starts, index) - 1
    return runs[i][0] + (index - starts[i])
