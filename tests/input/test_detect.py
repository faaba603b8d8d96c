"""Format and encoding come from the bytes, not the file name."""

from __future__ import annotations

import codecs

import pytest

from batchjob.input import inspect_file
from tests.files import ods, xls, xlsx

ROWS = [["prompt", "aspect_ratio"], ["a red fox", "16:9"], ["一只猫", "1:1"]]


def test_xlsx_named_csv_is_read_as_xlsx(tmp_path):
    path = xlsx(tmp_path / "prompts.csv", {"S": ROWS})
    r = inspect_file(path)
    assert (r.format, r.valid, r.fatal) == ("xlsx", 2, None)


def test_pdf_named_csv_gets_a_clear_error(write):
    r = inspect_file(write("prompts.csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj"))
    assert r.fatal.code == "unsupported_file_type"
    assert r.fatal.params["detected"] == "pdf"


def test_png_named_xlsx_is_refused(write):
    r = inspect_file(write("prompts.xlsx", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64))
    assert r.fatal.code == "unsupported_file_type"


def test_xls_detected_by_ole2_magic(tmp_path):
    path = xls(tmp_path / "p.bin", ROWS)
    r = inspect_file(path)
    assert (r.format, r.valid) == ("xls", 2)


def test_ods_detected_by_mimetype(tmp_path):
    r = inspect_file(ods(tmp_path / "p.ods", ROWS))
    assert (r.format, r.valid, r.sheet) == ("ods", 2, "Sheet1")


def test_plain_zip_and_docx_are_refused(tmp_path):
    import zipfile

    p = tmp_path / "a.xlsx"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "hi")
    assert inspect_file(p).fatal.code == "unsupported_file_type"
    d = tmp_path / "b.xlsx"
    with zipfile.ZipFile(d, "w") as z:
        z.writestr("word/document.xml", "<w/>")
    r = inspect_file(d)
    assert (r.fatal.code, r.fatal.params["detected"]) == ("unsupported_file_type", "docx")


def test_jsonl_detected_from_text(write):
    r = inspect_file(write("x.csv", '{"prompt": "a"}\n{"prompt": "b"}\n'))
    assert (r.format, r.kind, r.valid) == ("jsonl", "simple", 2)


def test_json_array_is_refused_with_a_named_type(write):
    r = inspect_file(write("x.jsonl", '[{"prompt": "a"}]'))
    assert (r.fatal.code, r.fatal.params["detected"]) == ("unsupported_file_type", "json")


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (codecs.BOM_UTF8 + "prompt\n一只猫\n".encode(), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + "prompt\n一只猫\n".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + "prompt\n一只猫\n".encode("utf-16-be"), "utf-16"),
        ("prompt\nred fox\n".encode("utf-16-le"), "utf-16-le"),
        ("prompt\n一只猫\n".encode(), "utf-8"),
        ("提示词\n一只可爱的猫\n".encode("gb18030"), "gb18030"),
    ],
)
def test_encodings(write, data, encoding):
    r = inspect_file(write("p.csv", data))
    assert r.fatal is None, r.fatal
    assert r.encoding == encoding
    assert r.valid == 1


def test_gbk_text_reads_back_as_the_chinese_the_user_wrote(tmp_path, write):
    from batchjob.input import convert_file

    src = write("p.csv", "提示词,比例\n一只可爱的猫,16:9\n".encode("gbk"))
    out = tmp_path / "o.jsonl"
    convert_file(src, out)
    assert "一只可爱的猫" in out.read_text("utf-8")


def test_undecodable_text_names_what_was_tried(write):
    # Valid in none of UTF-8 / GB18030: 0x80 is not a GB18030 lead byte, 0xFF never is.
    r = inspect_file(write("p.csv", b"prompt\n\x80\xff\x80\xff abc\n"))
    assert r.fatal.code == "encoding_unknown"
    assert r.fatal.params["tried"] == ["utf-8", "utf-16", "gb18030"]


def test_nul_bytes_in_text_are_binary(write):
    r = inspect_file(write("p.csv", b"prompt\nabc\x00def\n" + b"x" * 100))
    assert r.fatal.code == "unsupported_file_type"


@pytest.mark.parametrize(
    ("char", "at", "binary"),
    [("\x01", 10, True), ("\x1f", 4095, True), ("\x0b", 200, True), ("\x01", 4096, False), ("\t", 10, False)],
)
def test_a_control_character_in_the_first_4096_characters_is_binary(write, char, at, binary):
    head = "prompt\n"
    text = head + "a" * (at - len(head)) + char + "b\n" + "more\n" * 900
    r = inspect_file(write("p.csv", text.encode()))
    assert (r.fatal is not None and r.fatal.code == "unsupported_file_type") is binary


def test_the_delimiter_is_the_one_of_the_first_rows_even_when_later_rows_disagree(write):
    text = "prompt;size\n" + "".join(f"fox {i};1:1\n" for i in range(30)) + "a,b,c,d,e,f\n" * 500
    r = inspect_file(write("p.csv", text.encode()))
    assert r.fatal is None and [c.name for c in r.columns][:2] == ["prompt", "size"]


def test_empty_file(write):
    assert inspect_file(write("p.csv", b"")).fatal.code == "file_empty"
    assert inspect_file(write("q.csv", b"\n\n  \n")).fatal.code == "file_empty"


def test_missing_file(tmp_path):
    assert inspect_file(tmp_path / "nope.csv").fatal.code == "file_missing"


def test_gb18030_after_a_long_ascii_head_restarts_cleanly(write, tmp_path):
    """The head looks like UTF-8; a Chinese row far below proves otherwise."""
    from batchjob.input import convert_file

    body = "prompt\n" + "red fox in the snow\n" * 80_000 + "一只可爱的猫\n"
    src = write("p.csv", body.encode("gb18030"))
    out = tmp_path / "o.jsonl"
    r = convert_file(src, out)
    assert (r.encoding, r.valid, r.fatal) == ("gb18030", 80_001, None)
    data = out.read_bytes()
    assert data.count(b"\n") == 80_001 and "一只可爱的猫".encode() in data
