"""Both catalogs have the same keys and the same placeholders; every code has a sentence."""

import locales
from batchjob.input.report import FILE_CODES, ROW_CODES, WARNING_CODES


def test_same_keys_and_placeholders():
    en, zh = locales.catalog("en"), locales.catalog("zh")
    assert sorted(en) == sorted(zh)
    for key in en:
        assert locales.placeholders(en[key]) == locales.placeholders(zh[key]), key


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
