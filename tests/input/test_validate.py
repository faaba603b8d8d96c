import orjson
import pytest

from batchjob.input.report import Issue
from batchjob.input.validate import (
    cell_text,
    normalize_ratio,
    simple_line,
    split_urls,
    url_problem,
)


@pytest.mark.parametrize(
    ("text", "ratio"),
    [
        ("16:9", "16:9"),
        ("16：9", "16:9"),
        ("16x9", "16:9"),
        ("16 X 9", "16:9"),
        ("16×9", "16:9"),
        ("16:09", "16:9"),
        ("16:09:00", "16:9"),
        (" 9:16 ", "9:16"),
        ("21:9", "21:9"),
        ("１：１", "1:1"),
        ("4/5", "4:5"),
        ("3比4", "3:4"),
        ("7:5", None),
        ("16:10", None),
        ("wide", None),
        ("16", None),
        ("1:1:1", None),
    ],
)
def test_ratio_spellings(text, ratio):
    assert normalize_ratio(text) == ratio


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ('["https://a.com/1.png", "https://b.com/2.png"]', ["https://a.com/1.png", "https://b.com/2.png"]),
        ("https://a.com/1.png, https://b.com/2.png", ["https://a.com/1.png", "https://b.com/2.png"]),
        ("https://a.com/1.png，https://b.com/2.png", ["https://a.com/1.png", "https://b.com/2.png"]),
        ("https://a.com/1.png;https://b.com/2.png", ["https://a.com/1.png", "https://b.com/2.png"]),
        ("https://a.com/1.png\nhttps://b.com/2.png", ["https://a.com/1.png", "https://b.com/2.png"]),
        ("https://a.com/1.png https://b.com/2.png", ["https://a.com/1.png", "https://b.com/2.png"]),
        ("", []),
    ],
)
def test_url_separators(text, urls):
    assert split_urls(text) == urls


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/a.png", None),
        ("http://1.1.1.1/a.png", None),
        ("https://cdn.例子.中国/a.png", None),
        ("ftp://example.com/a.png", "image_url_invalid"),
        ("example.com/a.png", "image_url_invalid"),
        ("https://user:pw@example.com/a.png", "image_url_invalid"),
        ("javascript:alert(1)", "image_url_invalid"),
        ("https://[::1", "image_url_invalid"),
        ("http://localhost/a.png", "image_url_not_public"),
        ("http://foo.localhost/a.png", "image_url_not_public"),
        ("http://127.0.0.1/a.png", "image_url_not_public"),
        ("http://10.1.2.3/a.png", "image_url_not_public"),
        ("http://192.168.1.1/a.png", "image_url_not_public"),
        ("http://172.16.0.1/a.png", "image_url_not_public"),
        ("http://169.254.169.254/latest", "image_url_not_public"),
        ("http://[::1]/a.png", "image_url_not_public"),
        ("http://[fe80::1]/a.png", "image_url_not_public"),
        ("http://[::ffff:127.0.0.1]/a.png", "image_url_not_public"),
        ("http://2130706433/a.png", "image_url_not_public"),
        ("http://0x7f.0.0.1/a.png", "image_url_not_public"),
        ("http://0177.0.0.1/a.png", "image_url_not_public"),
        ("http://intranet/a.png", "image_url_not_public"),
        ("http://printer.local/a.png", "image_url_not_public"),
        ("http://0.0.0.0/a.png", "image_url_not_public"),
    ],
)
def test_url_rules(url, problem):
    assert url_problem(url) == problem


def test_cell_text_excel_values():
    import datetime as dt

    assert cell_text(12.0) == "12"
    assert cell_text(0.1) == "0.1"
    assert cell_text(True) == "TRUE"
    assert cell_text(dt.time(16, 9), "aspect_ratio") == "16:9"
    assert cell_text(dt.time(16, 9)) == "16:09"
    assert cell_text(dt.timedelta(hours=21, minutes=9), "aspect_ratio") == "21:9"
    assert cell_text(dt.date(2024, 5, 1)) == "2024-05-01"
    assert cell_text(None) == ""


def test_simple_line_reports_every_problem_of_a_row():
    errors: list[Issue] = []
    line = simple_line(5, "  ", "7:7", "http://127.0.0.1/a, ftp://x", errors)
    assert line is None
    assert [e.code for e in errors] == [
        "prompt_empty",
        "aspect_ratio_invalid",
        "image_url_not_public",
        "image_url_invalid",
    ]
    assert all(e.row == 5 for e in errors)


def test_canonical_line_shape():
    errors: list[Issue] = []
    line = simple_line(2, " a fox ", "16x9", "https://a.com/x.webp, https://b.com/y", errors)
    assert errors == []
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "a fox"},
                    {"fileData": {"fileUri": "https://a.com/x.webp", "mimeType": "image/webp"}},
                    {"fileData": {"fileUri": "https://b.com/y", "mimeType": "image/jpeg"}},
                ],
            }
        ],
        "generationConfig": {"responseModalities": ["IMAGE", "TEXT"], "imageConfig": {"aspectRatio": "16:9"}},
    }
