"""Both catalogs have the same keys and the same placeholders; every code has a sentence."""

import json

import locales
from batchjob.input.report import FILE_CODES, ROW_CODES, WARNING_CODES


def test_same_keys_and_placeholders():
    en, zh = locales.catalog("en"), locales.catalog("zh")
    assert sorted(en) == sorted(zh)
    for key in en:
        assert locales.placeholders(en[key]) == locales.placeholders(zh[key]), key
        assert all(en[key]) and all(zh[key]), key  # no empty translation


def test_plural_messages_have_every_form_and_choose_by_count():
    en, zh = locales.catalog("en"), locales.catalog("zh")
    plural = [k for k, v in en.items() if isinstance(v, tuple)]
    assert "flow.invalid_rows" in plural
    for key in plural:
        assert len(en[key]) == 2 and len(zh[key]) == 1, key  # English: one/other; Chinese: one
        assert all("{count}" in form for form in (*en[key], *zh[key])), key
    assert locales.t("en", "flow.sending_valid", count=1) == "Sending the 1 valid row."
    assert locales.t("en", "flow.sending_valid", count=2) == "Sending the 2 valid rows."
    assert locales.t("zh", "flow.sending_valid", count=1) == "正在发送 1 行有效数据。"


def test_quantities_beside_a_count_are_grouped_too():
    report = {"format": "csv", "count": 12000, "valid": 11990, "invalid": 10, "skipped": 0}
    assert locales.t("en", "flow.report", **report) == (
        "Checked your file (csv): 12,000 rows, 11,990 valid, 10 invalid, 0 blank skipped."
    )
    assert "11,990" in locales.t("zh", "flow.report", **report)
    summary = {"job_id": "j", "status": "Completed", "completed": 12000, "failed": 0, "total": 12000}
    assert "12,000 succeeded, 0 failed of 12,000" in locales.t(
        "en", "job.summary", duration="1 minute", **summary
    )
    assert locales.t("en", "flow.report", **{**report, "count": 4, "valid": 4, "invalid": 0}).startswith(
        "Checked your file (csv): 4 rows, 4 valid"
    )


def test_numbers_durations_and_status_names_are_localized():
    assert locales.t("en", "flow.sending_valid", count=12345) == "Sending the 12,345 valid rows."
    assert locales.duration("en", 95) == "1 minute 35 seconds"
    assert locales.duration("zh", 3725) == "1小时2分钟"
    assert locales.status_name("zh", "partially_failed", "partially_failed") == "部分失败"
    assert locales.status_name("en", "running", "IN_PROGRESS") == "Running (IN_PROGRESS)"
    from batchjob.shapes import STATES

    for state in (*STATES, "unknown"):
        assert locales.has(f"status.{state}"), state


def test_every_report_code_has_a_sentence():
    for code in (*ROW_CODES, *FILE_CODES, *WARNING_CODES):
        assert locales.has(f"input.{code}"), code


def test_documents_exist_in_both_languages():
    for lang in locales.LANGUAGES:
        assert "$" not in locales.document(
            lang, "guide.md", max_rows=1, max_cell_chars=1, max_file_mib=1, ratios="1:1", example_image="x"
        )


def test_language_from_client_code():
    assert locales.normalize_language("zh-hans") == "zh"
    assert locales.normalize_language("zh_CN.UTF-8") == "zh"
    assert locales.normalize_language("en-US") == "en"
    assert locales.normalize_language(None) == "en"
    assert locales.normalize_language("fr") == "en"


def test_a_compiled_catalog_is_used_only_while_it_names_its_po(tmp_path, monkeypatch):
    """The compiled catalog beside a .po names the .po's hash: an edited .po is compiled
    again, a stale or broken compiled file is replaced, and a package that cannot be
    written still gets its sentences."""
    home = tmp_path / "locales"
    for lang in locales.LANGUAGES:
        (home / lang / "LC_MESSAGES").mkdir(parents=True)
        (home / lang / "LC_MESSAGES" / "messages.po").write_bytes(locales.po_path(lang).read_bytes())
    monkeypatch.setattr(locales, "_HERE", home)
    locales._compiled.cache_clear()
    try:
        key = "flow.sending_valid"
        assert locales.t("en", key, count=2) == "Sending the 2 valid rows."
        target = locales.compiled_path("en")
        first = target.read_bytes()
        # Stale (another .po's hash, another sentence): not read, compiled again.
        target.write_text(first.decode().replace("Sending the", "FORGED").replace('"po": "', '"po": "0'))
        locales._compiled.cache_clear()
        assert locales.t("en", key, count=2) == "Sending the 2 valid rows."
        assert target.read_bytes() == first
        # The .po edited: the next start reads the edit.
        po = locales.po_path("en")
        edited = po.read_text("utf-8").replace("Sending the {count} valid rows.", "Now {count}.")
        po.write_text(edited, "utf-8")
        locales._compiled.cache_clear()
        assert locales.t("en", key, count=2) == "Now 2."
        # The current hash in another shape (an older format, or cut short): compiled again,
        # not a failed start.
        digest = json.loads(target.read_bytes())["po"]
        for shape in ({"format": 0, "po": digest}, {"format": locales.FORMAT, "po": digest}):
            target.write_text(json.dumps(shape))
            locales._compiled.cache_clear()
            assert locales.t("en", key, count=2) == "Now 2."
        # Broken, and nowhere to write: compiled in memory.
        target.write_bytes(b"\x00not json")
        monkeypatch.setattr(locales.os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError()))
        locales._compiled.cache_clear()
        assert locales.t("en", key, count=1) == "Sending the 1 valid row."
        assert target.read_bytes() == b"\x00not json" and not list(target.parent.glob(".*.tmp"))
    finally:
        monkeypatch.undo()
        locales._compiled.cache_clear()
