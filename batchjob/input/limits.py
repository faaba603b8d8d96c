"""Bounds applied to untrusted input files before and while they are parsed."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 50 * MiB
    max_unpacked_bytes: int = 256 * MiB  # sum of a zip's members (xlsx/ods)
    max_zip_ratio: float = 200.0  # unpacked/packed for any large member
    max_zip_members: int = 5_000
    max_rows: int = 200_000  # data rows (blank rows are skipped, not counted here)
    max_cell_chars: int = 32_767  # Excel's own cell limit
    max_line_bytes: int = 8 * MiB  # one JSONL line (inline images can be large)
    max_parse_seconds: float = 60.0
    # Spreadsheets, checked before any grid is built (a reader allocates the whole used
    # range densely: a cell at XFD1048576 alone would ask for 512 GiB).
    max_sheet_columns: int = 1_000
    max_sheet_cells: int = 10_000_000  # rows x columns of the used range
    max_merged_cells: int = 1_000_000  # cells covered by merged ranges, added up
    # The parse worker's address space (0: no limit); a reader that needs more is stopped.
    max_memory_bytes: int = 1024 * MiB

    @classmethod
    def from_env(cls, prefix: str = "BATCHJOB_LIMIT_") -> Limits:
        """Defaults, overridden by e.g. `BATCHJOB_LIMIT_MAX_ROWS=5000`."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(prefix + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = float if f.type in ("float", float) else int
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{prefix}{f.name.upper()} must be a number") from None
        return replace(cls(), **values)


class InputError(Exception):
    """A file-level problem: the file cannot be read or a limit was exceeded.

    `code` is a stable machine code; `params` fill the localized sentence.
    """

    def __init__(self, code: str, **params: object) -> None:
        super().__init__(code)
        self.code = code
        self.params = params

    def __str__(self) -> str:
        return f"{self.code} {self.params}" if self.params else self.code
