"""CSV dialects and spreadsheets: header search, typed values, merged and blank cells."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from batchjob.input import convert_file, inspect_file
from tests.files import xls, xlsx


def lines(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


@pytest.mark.parametrize("sep", [",", "\t", ";"])
def test_csv_dialects(write, tmp_path, sep):
    src = write(
        "p.csv",
        f"prompt{sep}aspect_ratio\nred fox, snow{sep}16:9\nowl{sep}1:1\n"
        if sep != ","
        else 'prompt,aspect_ratio\n"red fox, snow",16:9\nowl,1:1\n',
    )
    out = tmp_path / "o.jsonl"
    r = convert_file(src, out)
    assert r.ok, r.errors
    assert r.format == ("tsv" if sep == "\t" else "csv")
    got = lines(out)
    assert got[0]["contents"][0]["parts"][0]["text"] == "red fox, snow"
    assert got[0]["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"


def test_quoted_multiline_cell_is_one_row(write, tmp_path):
    src = write("p.csv", 'prompt\n"line one\nline two"\nnext\n')
    out = tmp_path / "o.jsonl"
    r = convert_file(src, out)
    assert (r.valid, r.total) == (2, 2)
    assert lines(out)[0]["contents"][0]["parts"][0]["text"] == "line one\nline two"


def test_header_found_below_title_rows_and_rows_numbered_as_in_the_file(write):
    src = write("p.csv", "My prompts,,\nMade in May,,\n\nPrompt,Ratio,Images\nfox,16:9,\n,,\n,7:5,\n")
    r = inspect_file(src)
    assert r.header_row == 4
    assert (r.total, r.valid, r.invalid, r.skipped) == (3, 1, 1, 1)
    assert [(e.row, e.code) for e in r.errors] == [(7, "prompt_empty"), (7, "aspect_ratio_invalid")]


def test_sheet_with_data_is_chosen(tmp_path):
    path = xlsx(
        tmp_path / "p.xlsx",
        {
            "Readme": [["How to use this file"], ["Fill in the prompts sheet"]],
            "Prompts": [["Prompt"], ["a red fox"]],
        },
    )
    r = inspect_file(path)
    assert (r.sheet, r.valid) == ("Prompts", 1)


def test_excel_typed_values_become_what_the_user_typed(tmp_path):
    path = xlsx(
        tmp_path / "p.xlsx",
        {
            "S": [
                ["Title row"],
                ["prompt", "aspect_ratio"],
                ["a", dt.time(16, 9)],  # 16:9 typed into Excel
                ["b", dt.time(9, 16)],
                ["c", dt.datetime(1899, 12, 30, 21, 9)],
                [12.0, "1:1"],  # a number typed as the prompt
                [3.5, None],
            ]
        },
    )
    out = tmp_path / "o.jsonl"
    r = convert_file(path, out)
    assert r.ok, r.errors
    got = lines(out)
    ratios = [g["generationConfig"].get("imageConfig", {}).get("aspectRatio") for g in got]
    assert ratios == ["16:9", "9:16", "21:9", "1:1", None]
    assert [g["contents"][0]["parts"][0]["text"] for g in got][3:] == ["12", "3.5"]


def test_merged_cells_fill_every_row_they_cover(tmp_path):
    path = xlsx(
        tmp_path / "p.xlsx",
        {
            "S": [
                ["Big merged title", None],
                ["prompt", "ratio"],
                ["fox", "16:9"],
                ["owl", None],
                ["cat", None],
            ]
        },
        merges={"S": ["A1:B1", "B3:B5"]},
    )
    out = tmp_path / "o.jsonl"
    r = convert_file(path, out)
    assert r.ok and r.valid == 3
    assert [g["generationConfig"]["imageConfig"]["aspectRatio"] for g in lines(out)] == ["16:9"] * 3


def test_blank_rows_in_sheets_are_skipped_and_counted(tmp_path):
    path = xlsx(tmp_path / "p.xlsx", {"S": [["prompt"], ["a"], [None], ["  "], ["b"]]})
    r = inspect_file(path)
    assert (r.valid, r.skipped, r.total) == (2, 2, 4)


def test_xls_numbers_and_text(tmp_path):
    path = xls(tmp_path / "p.xls", [["提示词", "比例"], ["一只猫", "16:9"], [42, "3:4"]])
    out = tmp_path / "o.jsonl"
    assert convert_file(path, out).ok
    assert [g["contents"][0]["parts"][0]["text"] for g in lines(out)] == ["一只猫", "42"]


def test_no_prompt_column_lists_columns_seen_and_expected(write):
    r = inspect_file(write("p.csv", "name,size,notes\nfox,16:9,x\n"))
    assert r.fatal.code == "no_prompt_column"
    assert r.fatal.params["columns"] == ["name", "size", "notes"]
    assert r.fatal.params["expected"] == "prompt / 提示词"  # the one column that is required
    assert (
        "aspect_ratio / 比例" in r.fatal.params["optional"]
        and "aspect_ratio" not in r.fatal.params["expected"]
    )
    from batchjob.input.messages import issue_message

    assert "optional: aspect_ratio / 比例, image_urls / 参考图" in issue_message(r.fatal, "en")


def test_header_only_has_no_data_rows(write):
    assert inspect_file(write("p.csv", "prompt,ratio\n\n")).fatal.code == "no_data_rows"


def test_unused_columns_are_reported_with_a_reason(write):
    r = inspect_file(write("p.csv", "Prompt,Negative Prompt,file name,prompt\nfox,ugly,a.png,x\n"))
    notes = {c.name: (c.field, c.note) for c in r.columns}
    assert notes == {
        "Prompt": ("prompt", None),
        "Negative Prompt": (None, "negative_prompt"),
        "file name": (None, "unknown"),
        "prompt": (None, "duplicate"),
    }
    assert r.warning_counts["column_ignored"] == 3


def test_every_row_is_validated_not_just_the_first(write):
    body = "prompt,aspect_ratio,image_urls\n" + "".join(
        f"p{i},{'7:7' if i % 3 == 0 else '1:1'},{'http://10.0.0.1/a.png' if i % 5 == 0 else ''}\n"
        for i in range(1, 31)
    )
    r = inspect_file(write("p.csv", body))
    bad_ratio = sorted(e.row for e in r.errors if e.code == "aspect_ratio_invalid")
    bad_url = sorted(e.row for e in r.errors if e.code == "image_url_not_public")
    assert bad_ratio == [i + 1 for i in range(1, 31) if i % 3 == 0]
    assert bad_url == [i + 1 for i in range(1, 31) if i % 5 == 0]
    assert r.invalid == len({*bad_ratio, *bad_url})
