"""Real files written by other people: the report a user would want from each."""

import orjson

from batchjob.input import convert_file, inspect_file
from tests.files import corpus_file


def test_gemini_automation_prompts(tmp_path):
    path = corpus_file("gemini-image-automation-prompts.xlsx")
    out = tmp_path / "o.jsonl"
    r = convert_file(path, out)
    assert r.ok and r.format == "xlsx" and r.sheet == "Sheet1"
    # Two prompts; the styled empty rows below them are not prompts and not errors.
    assert (r.valid, r.invalid) == (2, 0)
    assert [(c.name, c.field, c.note) for c in r.columns] == [
        ("prompt", "prompt", None),
        ("filename", None, "unknown"),
    ]
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert got[0]["contents"][0]["parts"][0]["text"].startswith("A peaceful minimalist flat vector")
    assert "imageConfig" not in got[0]["generationConfig"]


def test_painting_prompts(tmp_path):
    path = corpus_file("painting-prompts.xlsx")
    out = tmp_path / "o.jsonl"
    r = convert_file(path, out)
    assert r.ok and (r.valid, r.invalid, r.skipped) == (8, 0, 0)
    # `prompts` is the prompt column; the negative prompt and file name are said to be unused.
    assert [(c.name, c.field, c.note) for c in r.columns] == [
        ("pic_name", None, "unknown"),
        ("prompts", "prompt", None),
        ("negative", None, "negative_prompt"),
    ]
    # Stable Diffusion weights are pointed out on exactly the rows that use them.
    assert [w.row for w in r.warnings if w.code == "sd_weight_syntax"] == [3, 4, 8, 9]
    texts = [orjson.loads(x)["contents"][0]["parts"][0]["text"] for x in out.read_bytes().splitlines()]
    assert texts[3] == "skyscraper, city, global, masterpiece"
    assert "worst quality" not in "".join(texts)  # negatives are not mixed into prompts


def test_corpus_reports_in_chinese():
    r = inspect_file(corpus_file("painting-prompts.xlsx"))
    d = r.to_dict("zh")
    assert any("反向提示词" in w["message"] for w in d["warnings"])
