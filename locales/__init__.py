"""Message catalogs: every user-visible sentence, in `en` and `zh`.

Each language is a folder holding `messages.json` (flat key -> text with `{name}`
placeholders, filled by `str.format`) and longer Markdown documents such as `guide.md`.
"""

from __future__ import annotations

import json
import string
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"
_HERE = Path(__file__).resolve().parent  # package data sits beside this module


def normalize_language(code: str | None) -> str:
    """Map a client language code (`zh-hans`, `en-US`, None) to a catalog language."""
    if code and code.strip().lower().startswith("zh"):
        return "zh"
    return DEFAULT_LANGUAGE


@cache
def catalog(lang: str) -> dict[str, str]:
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    text = (_HERE / lang / "messages.json").read_text("utf-8")
    return json.loads(text)


def t(lang: str, key: str, /, **params: Any) -> str:
    """The sentence `key` in `lang`, with params filled in.

    A missing key falls back to English, then to the key itself, so a gap in a catalog
    never crashes a user's flow (the catalog test keeps gaps from landing).
    """
    text = catalog(lang).get(key) or catalog(DEFAULT_LANGUAGE).get(key)
    if text is None:
        return key
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        return text


def has(key: str) -> bool:
    return key in catalog(DEFAULT_LANGUAGE)


def document(lang: str, name: str, /, **params: Any) -> str:
    """A Markdown document from the catalog folder, `$name` placeholders filled in."""
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    text = (_HERE / lang / name).read_text("utf-8")
    return string.Template(text).safe_substitute({k: str(v) for k, v in params.items()})


def placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}
