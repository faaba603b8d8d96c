"""Some rows of a prompt file as a new file, by the pipeline's own row numbers."""

from __future__ import annotations

import csv

from batchjob.input import Limits, inspect_file
from batchjob.input.subset import subset_file
from tests.files import xlsx


def read(path):
    with path.open(encoding="utf-8") as f:
        return list(csv.reader(f))


def test_a_csv_keeps_its_header_and_columns_and_gets_the_original_row(tmp_path):
    src = tmp_path / "p.csv"
    src.write_text('note,prompt,ratio\n,a,1:1\n\n,"b\nstill b",16:9\n,c,1:1\n,d,9:16\n', encoding="utf-8")
    out = tmp_path / "failed.csv"
    report = subset_file(src, out, {4, 6}, Limits())
    assert report.fatal is None and report.valid == 2
    assert read(out) == [
        ["note", "prompt", "ratio", "original_row"],
        ["", "b\nstill b", "16:9", "4"],
        ["", "d", "9:16", "6"],
    ]
    # The numbers are the pipeline's: reading the original maps b and d to rows 4 and 6.
    runs = inspect_file(src).line_rows
    rows = [first + i for first, n in runs for i in range(n)]
    assert rows == [2, 4, 5, 6]


def test_a_spreadsheet_and_a_jsonl_file(tmp_path):
    book = xlsx(
        tmp_path / "p.xlsx",
        {"S": [["title"], ["prompt", "ratio"], ["a", "1:1"], ["b", "16:9"], ["c", "1:1"]]},
    )
    out = tmp_path / "f.csv"
    assert subset_file(book, out, {5}, Limits()).valid == 1
    assert read(out) == [["prompt", "ratio", "original_row"], ["c", "1:1", "5"]]
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c"}')
    out = tmp_path / "f.jsonl"
    assert subset_file(lines, out, {1, 3}, Limits()).valid == 2
    assert out.read_text() == '{"prompt": "a"}\n{"prompt": "c"}\n'
