"""Message catalogs: every user-visible sentence, in `en` and `zh`.

Each language is a folder holding a gettext catalog, `LC_MESSAGES/messages.po` (the
message key is the msgid; `{name}` placeholders are filled by `str.format`; plural
messages have one form per the language's `Plural-Forms` and choose by `{count}`), and
longer Markdown documents such as `guide.md`. Numbers, amounts and durations are
formatted for the language by Babel (CLDR data).

The .po files are the source. They are read with Babel, and what a lookup needs is kept in
`messages.compiled.json` beside each, naming the hash of the .po it came from: a changed
.po is compiled again at the next start, so there is no compiled file to forget to rebuild.
"""

from __future__ import annotations

import gettext
import hashlib
import io
import json
import os
import string
from collections.abc import Callable
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


def po_path(lang: str) -> Path:
    return _HERE / lang / "LC_MESSAGES" / "messages.po"


FORMAT = 1  # of the compiled catalogs: raised when what they hold changes


def compiled_path(lang: str) -> Path:
    """The catalog compiled from its .po (ignored by git, like bytecode): what a start reads."""
    return po_path(lang).with_name("messages.compiled.json")


def _compile(data: bytes, lang: str, digest: str) -> dict[str, Any]:
    # Babel is imported only here: a start whose compiled catalogs are current never loads
    # its message-file machinery (0.1 s and half a MiB).
    from babel.messages.pofile import read_po

    cat = read_po(io.BytesIO(data), locale=lang)
    texts = {(m.id[0] if m.pluralizable else m.id): m.string for m in cat if m.id}
    # What gettext would find: translated, not fuzzy (as a compiled .mo holds them).
    live = [(m.id[0] if m.pluralizable else m.id) for m in cat if m.id and m.string and not m.fuzzy]
    return {"format": FORMAT, "po": digest, "plural": cat.plural_expr, "texts": texts, "live": live}


def _read(got: Any, digest: str) -> tuple[dict[str, Any], frozenset[str], Callable[[int], int]]:
    if not (isinstance(got, dict) and got.get("format") == FORMAT and got.get("po") == digest):
        raise ValueError("stale")
    texts = {k: tuple(v) if isinstance(v, list) else v for k, v in got["texts"].items()}
    return texts, frozenset(got["live"]), gettext.c2py(got["plural"])


@cache
def _compiled(lang: str) -> tuple[dict[str, Any], frozenset[str], Callable[[int], int]]:
    """(key -> text or plural forms, the keys with a translation, the plural rule).

    Compiled from the .po once per change of it: the compiled file names the .po's hash,
    so an edited catalog is never read stale. Where the package cannot be written, each
    start compiles again."""
    data = po_path(lang).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    target = compiled_path(lang)
    try:
        return _read(json.loads(target.read_bytes()), digest)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, stale, of another shape
        pass
    got = _compile(data, lang, digest)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(got, ensure_ascii=False), "utf-8")
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
    return _read(got, digest)


def catalog(lang: str) -> dict[str, Any]:
    """Key -> text, or key -> tuple of plural forms (for the catalog tests and tools)."""
    return dict(_compiled(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)[0])


def _lookup(lang: str, key: str, count: Any) -> str | None:
    """As gettext reads a compiled catalog: the key itself when it has no translation."""
    texts, live, plural = _compiled(lang)
    if key not in texts:
        return None
    if key not in live:
        return key
    text = texts[key]
    if isinstance(text, tuple):
        n = count if isinstance(count, int) and not isinstance(count, bool) else 2
        i = plural(n)
        return text[i] if 0 <= i < len(text) else key
    return text


def t(lang: str, key: str, /, **params: Any) -> str:
    """The sentence `key` in `lang`, with params filled in (numbers formatted for `lang`).

    A missing key falls back to English, then to the key itself, so a gap in a catalog
    never crashes a user's flow (the catalog test keeps gaps from landing).
    """
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    text = _lookup(lang, key, params.get("count"))
    if text is None or text == key:
        text = _lookup(DEFAULT_LANGUAGE, key, params.get("count"))
    if text is None:
        return key
    try:
        return text.format(**{k: _shown(lang, k, v) for k, v in params.items()})
    except (KeyError, IndexError, ValueError):
        return text


MONEY = frozenset(
    {
        "cost",
        "balance",
        "required",
        "shortfall",
        "unit_price",
        "current",
        "limit",
        "used",
        "left",
        "threshold",
        "amount",
    }
)


QUANTITIES = frozenset(
    {"count", "valid", "invalid", "skipped", "total", "completed", "failed", "done", "shown"}
)


def _shown(lang: str, name: str, value: Any) -> Any:
    if isinstance(value, list | tuple):  # a list, with the language's separator (", " or "、")
        return t(lang, "list.sep").join(str(v) for v in value)
    # A plural message's count and the other quantities beside it (rows valid, records
    # failed) are grouped for the language (12,345) from five digits on. Other numbers may
    # be ports, rows or ids and are formatted by their callers where it fits.
    if name in MONEY and (value is None or (isinstance(value, int | float) and not isinstance(value, bool))):
        return "?" if value is None else number(lang, value)  # amounts: the language's grouping
    if name == "currency" and isinstance(value, str) and has(f"unit.{value.strip().lower()}"):
        return t(lang, f"unit.{value.strip().lower()}")  # the service's unit word, translated
    if name in QUANTITIES and isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return number(lang, value)
    return value


def has(key: str) -> bool:
    return key in _compiled(DEFAULT_LANGUAGE)[0]


@cache
def _babel_locale(lang: str) -> Any:
    from babel import Locale

    return Locale.parse("zh_Hans_CN" if lang == "zh" else "en_US")


def prepare(lang: str) -> None:
    """Load what `lang`'s sentences and numbers need (its catalog, Babel's locale data:
    ~40 ms), so that a short command can do it while it waits for other work."""
    _compiled(lang if lang in LANGUAGES else DEFAULT_LANGUAGE)
    number(lang, 10_000)


def number(lang: str, value: float | int) -> str:
    """A number written for `lang` (grouping, decimal sign), up to 4 decimals kept."""
    from babel.numbers import format_decimal

    return format_decimal(value, format="#,##0.####", locale=_babel_locale(lang))


def duration(lang: str, seconds: float) -> str:
    """A duration in words for `lang`, in at most two units: "1 hour 5 minutes", "45秒"."""
    from babel.dates import format_timedelta

    h, rest = divmod(max(0, round(seconds)), 3600)
    m, sec = divmod(rest, 60)
    pairs = (
        [(h, "hour"), (m, "minute")] if h else [(m, "minute"), (sec, "second")] if m else [(sec, "second")]
    )
    size = {"hour": 3600, "minute": 60, "second": 1}
    loc = _babel_locale(lang)
    parts = [
        format_timedelta(n * size[unit], granularity=unit, threshold=1e9, locale=loc)
        for i, (n, unit) in enumerate(pairs)
        if n or i == 0
    ]
    return ("" if lang == "zh" else " ").join(parts)


def when(lang: str, stamp: Any) -> str:
    """A date and time written for `lang` (short, in UTC)."""
    from babel.dates import format_datetime

    return format_datetime(stamp, "short", tzinfo=None, locale=_babel_locale(lang)) + " UTC"


def document(lang: str, name: str, /, **params: Any) -> str:
    """A Markdown document from the catalog folder, `$name` placeholders filled in."""
    lang = lang if lang in LANGUAGES else DEFAULT_LANGUAGE
    text = (_HERE / lang / name).read_text("utf-8")
    return string.Template(text).safe_substitute({k: str(v) for k, v in params.items()})


def placeholders(text: str | tuple[str, ...]) -> set[str]:
    forms = (text,) if isinstance(text, str) else text
    return {f for form in forms for _, f, _, _ in string.Formatter().parse(form) if f}


def status_name(lang: str, state: str, word: str | None = None) -> str:
    """A job state's name in `lang`; the service's own word follows when it differs."""
    name = t(lang, f"status.{state}") if has(f"status.{state}") else (word or state)
    if word and word.strip().lower() not in (state, ""):
        return t(lang, "status.with_word", name=name, word=word)
    return name
