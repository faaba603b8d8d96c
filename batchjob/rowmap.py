"""Which row of the user's file each record of a job came from.

The service numbers a job's records from 0 in the order of the uploaded lines; people know
their rows (a spreadsheet's row numbers, a JSONL file's line numbers). The inspection
records the rows it turned into lines as runs [first row, count]; kept here as short text
("2+40,44+100"), so a job's map is one small Redis value, not a list per record.
"""

from __future__ import annotations

from bisect import bisect_right

MAX_TEXT = 16_384  # a file whose map would be longer (rows scattered) keeps none: line numbers


def encode(runs: list[list[int]] | list[tuple[int, int]]) -> str:
    text = ",".join(f"{int(first)}+{int(n)}" for first, n in runs if int(n) > 0)
    return text if len(text) <= MAX_TEXT else ""


def decode(text: str | bytes | None) -> list[tuple[int, int]]:
    """Runs from text; anything malformed gives no map (the caller falls back to line numbers)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    runs: list[tuple[int, int]] = []
    for part in (text or "").split(","):
        first, _, n = part.partition("+")
        if not (first.isdigit() and n.isdigit()):
            return []
        runs.append((int(first), int(n)))
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
