"""The inspection report: what the file is and what will happen to every row."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import repeat
from typing import Any

# Stable machine codes. Row level: a row is invalid and is listed with its number.
ROW_CODES = (
    "prompt_empty",
    "aspect_ratio_invalid",
    "image_url_invalid",
    "image_url_not_public",
    "json_invalid",
    "json_not_object",
    "openai_batch_line",
    "unknown_line_schema",
    "contents_invalid",
    "generation_config_invalid",
)
# File level (fatal): nothing can be converted.
FILE_CODES = (
    "file_missing",
    "file_empty",
    "unsupported_file_type",
    "encoding_unknown",
    "csv_malformed",
    "spreadsheet_unreadable",
    "no_prompt_column",
    "no_data_rows",
    "openai_batch_format",
    "limit_file_size",
    "limit_zip_unpacked",
    "limit_zip_ratio",
    "limit_zip_members",
    "limit_rows",
    "limit_cell_length",
    "limit_line_length",
    "limit_parse_time",
    "limit_memory",
    "limit_sheet_columns",
    "limit_sheet_cells",
    "limit_merged_cells",
    "file_unreadable",
    "worker_unavailable",
)
# Warnings: the row is valid, but the user should know.
WARNING_CODES = ("sd_weight_syntax", "column_ignored", "field_ignored")

WARNINGS_KEPT_PER_CODE = 200


@dataclass(slots=True)
class Issue:
    code: str
    row: int | None = None
    column: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, message: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"row": self.row, "column": self.column, "code": self.code, "params": self.params}
        if message is not None:
            d["message"] = message
        return d


def astuple_issue(i: Issue) -> tuple[str, int | None, str | None, dict[str, Any]]:
    return i.code, i.row, i.column, i.params


@contextmanager
def collector_paused() -> Iterator[None]:
    """For decoding a report: many small objects at once (100,000 issues). Python's cyclic
    collector, run every 700 new objects, walks them again and again: three quarters of the
    decode time. They hold no cycles; collection goes on afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# Issues cross the pipe by column: a run of issues with the same code, column and param
# names goes as [code, column, names, rows, values], one list of values per name, or
# {"=": value} when every issue of the run has the same one (the allowed aspect ratios of
# every invalid ratio). 50,000 invalid rows were 700,000 strings to decode, and 90 MiB, as
# objects; as arrays of rows and values they are a few lists orjson reads at C speed.
def _wire_issues(issues: list[Issue]) -> list[list[Any]]:
    runs: list[tuple[str, str | None, list[int | None], list[dict[str, Any]]]] = []
    code, column, names, rows, params = "", None, {}.keys(), [], []  # type: ignore[var-annotated]
    for i in issues:
        if i.code != code or i.column != column or i.params.keys() != names:
            code, column, names, rows, params = i.code, i.column, i.params.keys(), [], []
            runs.append((code, column, rows, params))
        rows.append(i.row)
        params.append(i.params)
    wire = []
    for code, column, rows, params in runs:
        values = []
        for name in params[0]:
            c = [p[name] for p in params]
            # One value for the run only when every one is equal and of one type (1 == True).
            same = c.count(c[0]) == len(c) and len({type(v) for v in c}) == 1
            values.append({"=": c[0]} if same else c)
        wire.append([code, column, list(params[0]), rows, values])
    return wire


def _issues(runs: list[list[Any]]) -> list[Issue]:
    out: list[Issue] = []
    for code, column, names, rows, values in runs:
        cols = [repeat(c["="], len(rows)) if type(c) is dict else c for c in values]
        if len(names) == 2:  # the common case, without a zip per issue
            (a, b), (ca, cb) = names, cols
            out += [Issue(code, r, column, {a: x, b: y}) for r, x, y in zip(rows, ca, cb, strict=False)]
        else:
            per_row = zip(rows, zip(*cols, strict=False) if cols else repeat((), len(rows)), strict=False)
            out += [Issue(code, r, column, dict(zip(names, vs, strict=True))) for r, vs in per_row]
    return out


@dataclass(slots=True)
class Column:
    name: str  # as seen in the file
    index: int
    field: str | None  # prompt | aspect_ratio | image_urls | None (not used)
    note: str | None = None  # why it is not used: unknown | duplicate | negative_prompt


@dataclass
class Report:
    path: str
    format: str | None = None  # csv | tsv | jsonl | xlsx | xls | ods
    encoding: str | None = None
    sheet: str | None = None
    kind: str | None = None  # simple | vertex | mixed | openai_batch
    header_row: int | None = None
    columns: list[Column] = field(default_factory=list)
    total: int = 0  # every row after the header: valid + invalid + skipped
    valid: int = 0
    invalid: int = 0
    skipped: int = 0  # blank rows
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    warning_counts: dict[str, int] = field(default_factory=dict)
    fatal: Issue | None = None
    # The user's row (or line) of each line sent, as runs [first row, how many]: line i of
    # the converted file is the i-th row these runs name. Kept small: most files are one run.
    line_rows: list[list[int]] = field(default_factory=list)

    def sent(self, row: int, n: int = 1) -> None:
        """Rows row..row+n-1 of the user's file became the next n lines."""
        runs = self.line_rows
        if runs and runs[-1][0] + runs[-1][1] == row:
            runs[-1][1] += n
        elif n > 0:
            runs.append([row, n])

    @property
    def ok(self) -> bool:
        """Every row is valid and there is at least one."""
        return self.fatal is None and self.invalid == 0 and self.valid > 0

    @property
    def usable(self) -> bool:
        """At least one valid row can be sent (possibly after dropping invalid rows)."""
        return self.fatal is None and self.valid > 0

    def warn(self, code: str, row: int | None = None, column: str | None = None, **params: Any) -> None:
        n = self.warning_counts.get(code, 0)
        self.warning_counts[code] = n + 1
        if n < WARNINGS_KEPT_PER_CODE:
            self.warnings.append(Issue(code, row, column, params))

    def warn_rows(self, code: str, rows: Sequence[int], column: str | None = None) -> None:
        """The same warning for each of `rows` (in order): counted, the first ones kept."""
        kept = self.warning_counts.get(code, 0)
        self.warning_counts[code] = kept + len(rows)
        for row in rows[: max(0, WARNINGS_KEPT_PER_CODE - kept)]:
            self.warnings.append(Issue(code, row, column, {}))

    def to_wire(self) -> dict[str, Any]:
        """Every field, as JSON types: how the parse worker hands a report over.

        Issues and columns go as arrays, not objects: a file with 100,000 invalid rows
        crosses the pipe in a fraction of the time (`dataclasses.asdict` copies deeply)."""
        with collector_paused():
            return self._to_wire()

    def _to_wire(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["columns"] = [[c.name, c.index, c.field, c.note] for c in self.columns]
        d["errors"] = _wire_issues(self.errors)
        d["warnings"] = _wire_issues(self.warnings)
        d["fatal"] = None if self.fatal is None else [*astuple_issue(self.fatal)]
        return d

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Report:
        """The inverse of `to_wire`; unknown keys are ignored."""
        with collector_paused():
            return cls._from_wire(d)

    @classmethod
    def _from_wire(cls, d: dict[str, Any]) -> Report:
        known = {f.name for f in fields(cls)}
        r = cls(**{k: v for k, v in d.items() if k in known})
        r.columns = [Column(*c) for c in r.columns]
        r.errors = _issues(r.errors)
        r.warnings = _issues(r.warnings)
        r.fatal = Issue(*r.fatal) if r.fatal else None  # type: ignore[misc]
        return r

    def to_dict(self, lang: str = "en") -> dict[str, Any]:
        from batchjob.input.messages import issue_message

        return {
            "path": self.path,
            "ok": self.ok,
            "format": self.format,
            "encoding": self.encoding,
            "sheet": self.sheet,
            "kind": self.kind,
            "header_row": self.header_row,
            "columns": [
                {"name": c.name, "index": c.index, "field": c.field, "note": c.note} for c in self.columns
            ],
            "rows": {
                "total": self.total,
                "valid": self.valid,
                "invalid": self.invalid,
                "skipped": self.skipped,
            },
            "errors": [e.to_dict(issue_message(e, lang)) for e in self.errors],
            "warnings": [w.to_dict(issue_message(w, lang)) for w in self.warnings],
            "warning_counts": dict(self.warning_counts),
            "fatal": None if self.fatal is None else self.fatal.to_dict(issue_message(self.fatal, lang)),
            # line i of the converted file is the i-th row these [first row, count] runs name
            "line_rows": [list(r) for r in self.line_rows],
        }
