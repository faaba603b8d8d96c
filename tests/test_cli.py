"""The `batchjob` command: exit codes, JSON report, one-line failures, templates."""

from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

from batchjob.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchjob.cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def test_inspect_exit_codes_and_json_keys(write, capsys):
    good = write("g.csv", "prompt,aspect_ratio\nfox,16:9\n")
    bad = write("b.csv", "prompt,aspect_ratio\nfox,7:7\n")
    assert main(["inspect", str(good)]) == 0
    assert main(["inspect", str(bad), "--json"]) == 1
    d = orjson.loads(capsys.readouterr().out.splitlines()[-1])
    for key in ("format", "encoding", "sheet", "kind", "columns", "rows", "errors"):
        assert key in d
    assert d["rows"] == {"total": 1, "valid": 0, "invalid": 1, "skipped": 0}
    assert d["errors"][0]["row"] == 2 and d["errors"][0]["column"] == "aspect_ratio"
    assert d["errors"][0]["code"] == "aspect_ratio_invalid" and "7:7" in d["errors"][0]["message"]


def test_row_counts_are_grouped_for_the_language(write, capsys):
    """Every count of the report is a quantity, written as the language groups it."""
    rows = "".join("fox,7:5\n" if i % 2 else "fox,1:1\n" for i in range(20_000))
    src = write("many.csv", "prompt,aspect_ratio\n" + rows)
    for lang in ("en", "zh"):
        assert main(["--lang", lang, "inspect", str(src)]) == 1
        out = capsys.readouterr()
        report = out.out + out.err
        assert "20,000" in report and "10,000" in report, report
        assert "20000" not in report and "10000" not in report


def test_inspect_unsupported_file_exits_1_with_a_sentence(write):
    p = run("inspect", str(write("x.csv", b"%PDF-1.4 junk")))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr + p.stdout
    assert "not a spreadsheet" in p.stdout


def test_usage_errors_exit_2():
    assert run("inspect").returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("template", "--kind", "pdf", "-o", "x").returncode == 2


def test_every_command_has_help():
    for cmd in ([], ["inspect"], ["convert"], ["template"]):
        p = run(*cmd, "--help")
        assert p.returncode == 0 and "usage:" in p.stdout


def test_messages_in_chinese(write):
    p = run("--lang", "zh", "inspect", str(write("b.csv", "prompt\n\n,\n")))
    assert "文件只有表头" in p.stdout


def test_convert_writes_only_when_valid(write, tmp_path):
    src = write("p.csv", "prompt,ratio\nfox,16:9\n,\n,1:1\n")
    out = tmp_path / "o.jsonl"
    p = run("convert", str(src), "-o", str(out))
    assert p.returncode == 1 and not out.exists()
    assert "Nothing was written" in p.stderr
    p = run("convert", str(src), "-o", str(out), "--skip-invalid")
    assert p.returncode == 0, p.stderr
    assert len(out.read_bytes().splitlines()) == 1


def test_convert_to_missing_directory_is_one_line(write, tmp_path):
    p = run("convert", str(write("p.csv", "prompt\nfox\n")), "-o", str(tmp_path / "no" / "o.jsonl"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_inspect_example():
    p = run("inspect", "--example")
    assert p.returncode == 0 and "4 valid" in p.stdout


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("kind", ["csv", "jsonl", "xlsx"])
def test_templates_are_valid_input(tmp_path, kind, lang):
    from batchjob.input import inspect_file

    out = tmp_path / f"t.{kind}"
    assert main(["template", "--kind", kind, "--lang", lang, "-o", str(out)]) == 0
    r = inspect_file(out)
    assert r.ok and r.valid == 4
    # one row with image URLs, one Chinese prompt
    assert any("一" <= ch <= "鿿" for ch in out.read_bytes().decode("utf-8", "ignore"))


def test_xlsx_template_cells_are_text(tmp_path):
    from openpyxl import load_workbook

    out = tmp_path / "t.xlsx"
    main(["template", "--kind", "xlsx", "-o", str(out)])
    ws = load_workbook(out).active
    cells = [c for row in ws.iter_rows(min_row=1, max_row=5) for c in row if c.value is not None]
    assert cells and all(c.data_type == "s" and c.number_format == "@" for c in cells)


def test_guide_in_both_languages(tmp_path):
    for lang, needle in (("en", "Prompt file format guide"), ("zh", "提示词文件格式说明")):
        out = tmp_path / f"guide.{lang}.md"
        main(["template", "--kind", "guide", "--lang", lang, "-o", str(out)])
        text = out.read_text("utf-8")
        assert needle in text and "200000" in text and "$" not in text


@pytest.mark.parametrize("kind", ["corner.xlsx", "corner.xls", "panic.xls", "merges.xlsx"])
def test_hostile_spreadsheets_are_a_sentence_not_a_crash(kind, tmp_path):
    """Each of these aborted or hung the command (or took its whole process down)."""
    from tests.files import corner_cell_xls, corner_cell_xlsx, mutated_xls, overlapping_merges_xlsx

    build = {
        "corner.xlsx": corner_cell_xlsx,
        "corner.xls": corner_cell_xls,
        "panic.xls": lambda p: mutated_xls(p, 20),
        "merges.xlsx": lambda p: overlapping_merges_xlsx(p, 10_000, "Z"),
    }[kind]
    path = build(tmp_path / kind)
    for args in (["inspect", str(path)], ["convert", str(path), "-o", str(tmp_path / "o.jsonl")]):
        p = run("--lang", "zh", *args)
        assert p.returncode == 1, p.stderr
        assert "Traceback" not in p.stdout + p.stderr and "panicked" not in p.stderr
        assert not (tmp_path / "o.jsonl").exists()


def test_convert_to_stdout_keeps_the_report_apart(write, tmp_path):
    src = write("p.csv", "prompt\nfox\n,bad\nowl\n")
    p = subprocess.run(
        [sys.executable, "-m", "batchjob.cli", "convert", str(src), "-o", "-", "--skip-invalid"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]  # stdout is nothing but the JSONL
    assert [x["contents"][0]["parts"][0]["text"] for x in lines] == ["fox", "owl"]
    assert "Row 3" in p.stderr and not (tmp_path / "-").exists()


def test_version():
    for module in ("batchjob.cli", "bot.main"):
        p = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True)
        assert p.returncode == 0 and p.stdout.split()[-1][0].isdigit(), p.stdout + p.stderr


def test_inspect_in_a_child_of_a_process_with_many_open_files(write, tmp_path):
    """The reading child limits its open files; a parent that holds many (a test runner, a
    busy bot) must not leave it none for the file itself."""
    good = write("g.csv", "prompt\nfox\n")
    held = [open(tmp_path / f"held-{i}", "w") for i in range(150)]  # noqa: SIM115
    try:
        assert main(["inspect", str(good)]) == 0
    finally:
        for f in held:
            f.close()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_file_that_cannot_be_opened_is_named_without_a_format(tmp_path, lang):
    """Its report says it cannot be opened, under its name alone, not under "format not
    recognized" (nothing was read to recognize)."""
    import locales

    missing = tmp_path / "nope.csv"
    p = run("--lang", lang, "inspect", str(missing))
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 1
    assert lines[0] == locales.t(lang, "cli.report.title_unread", path=str(missing))
    assert locales.t(lang, "cli.report.format_unknown") not in p.stdout
    assert locales.t(lang, "input.file_missing") in lines[1]
