"""Row rules and the canonical line.

Canonical line (what the service gets):
    {"contents": [{"role": "user", "parts": [{"text": PROMPT},
                                             {"fileData": {"fileUri": URL, "mimeType": M}}...]}],
     "generationConfig": {"responseModalities": ["IMAGE", "TEXT"],
                          "imageConfig": {"aspectRatio": "16:9"}}}   # imageConfig when set
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import orjson

from batchjob.input.report import Issue
from batchjob.netcheck import is_public_host

ASPECT_RATIOS = frozenset(("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"))
RESPONSE_MODALITIES = ["IMAGE", "TEXT"]
ALLOWED_RATIOS = sorted(ASPECT_RATIOS, key=lambda r: int(r.split(":")[0]) / int(r.split(":")[1]))
_RATIO_SEP = re.compile(r"\s*(?:[:xX×*/比]|\s)\s*")
_URL_ITEM = re.compile(r"[^\s,，;；、]+")
_URL = re.compile(r"(?i)https?://(\[[0-9a-f:.]+\]|[^/?#@\s:\[\]\\]+)(:(\d{1,5}))?(?:[/?#]\S*)?")
_SD_WEIGHT = re.compile(r"\([^()]*:\s*\d+(?:\.\d+)?\s*\)")
_MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
    "bmp": "image/bmp",
}
_EXCEL_EPOCH_DATES = (dt.date(1899, 12, 30), dt.date(1899, 12, 31), dt.date(1900, 1, 1))
_ratio_cache: dict[str, str | None] = {}
_host_cache: dict[str, bool] = {}
_MISS: Any = object()


# --- cell values -----------------------------------------------------------------------


def cell_text(value: Any, field: str | None = None) -> str:
    """The text a user sees in a spreadsheet cell.

    Excel types values as the user types them: `16:9` in a ratio column becomes the time
    16:09, `12` becomes 12.0. Both come back as the text the user typed.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.date() in _EXCEL_EPOCH_DATES:
            return cell_text(value.time(), field)
        return value.isoformat(sep=" ", timespec="minutes" if not value.second else "seconds")
    if isinstance(value, dt.time):
        if field == "aspect_ratio":
            return f"{value.hour}:{value.minute}"
        return value.strftime("%H:%M:%S" if value.second else "%H:%M")
    if isinstance(value, dt.timedelta):
        minutes = int(value.total_seconds()) // 60
        if field == "aspect_ratio":
            return f"{minutes // 60}:{minutes % 60}"
        return f"{minutes // 60}:{minutes % 60:02d}"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def normalize_ratio(text: str) -> str | None:
    """`16:9`, `16：9`, `16x9`, `16 比 9`, `16:09`, `16:09:00` → `16:9`; None if not allowed."""
    if text in _ratio_cache:
        return _ratio_cache[text]
    t = unicodedata.normalize("NFKC", text).strip()
    parts = [p for p in _RATIO_SEP.split(t) if p != ""]
    result = None
    if len(parts) == 3 and parts[2].strip("0") == "":
        parts = parts[:2]
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        candidate = f"{int(parts[0])}:{int(parts[1])}"
        if candidate in ASPECT_RATIOS:
            result = candidate
    if len(_ratio_cache) < 10_000:
        _ratio_cache[text] = result
    return result


def split_urls(text: str) -> list[str]:
    """A JSON array, or URLs separated by commas (also `，`), semicolons, spaces, newlines."""
    t = text.strip()
    if t.startswith("["):
        try:
            value = orjson.loads(t)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
    return _URL_ITEM.findall(t)


def url_part(url: str) -> bytes | str:
    """The URL's canonical image part (serialized), or the row code saying why it is refused.

    One function for both so that each URL of each row is parsed once: a strict regex
    (scheme, host, optional port, no user info, no spaces) instead of urlsplit, a cache of
    host verdicts, and the image type read from the path's extension.
    """
    m = _URL.fullmatch(url)
    if m is None:
        return "image_url_invalid"
    host, port = m.group(1, 3)
    if port is not None and not 0 < int(port) < 65536:
        return "image_url_invalid"
    ok = _host_cache.get(host)
    if ok is None:
        ok = is_public_host(host.lower().strip("[]"))
        if len(_host_cache) < 50_000:
            _host_cache[host] = ok
    if not ok:
        return "image_url_not_public"
    tail = _TAIL_BY_EXT.get(url[url.rfind(".") + 1 :]) or _MIME_TAIL[mime_for(url)]
    return _FILE_PART + orjson.dumps(url) + tail


def url_problem(url: str) -> str | None:
    """None for a public http(s) URL; otherwise the row code that explains why not."""
    r = url_part(url)
    return r if isinstance(r, str) else None


def mime_for(url: str) -> str:
    """The image type named by the URL's path extension; JPEG when it names none."""
    path = url.partition("?")[0].partition("#")[0]
    ext = path[path.rfind(".") + 1 :]
    return _MIME.get(ext) or _MIME.get(ext.lower(), "image/jpeg")


def has_sd_weights(prompt: str) -> bool:
    return "(" in prompt and _SD_WEIGHT.search(prompt) is not None


# --- rows --------------------------------------------------------------------------------


def ratio_issue(row: int, ratio_text: str, columns: dict[str, str] | None) -> Issue:
    """The error of a row whose aspect ratio cell is not one the service takes."""
    return ratio_issues(row, [(0, ratio_text)], columns)[0]


def ratio_issues(
    first: int, refused: Sequence[tuple[int, str]], columns: dict[str, str] | None
) -> list[Issue]:
    """`ratio_issue` for each (row - first, ratio cell) of `refused`, at once (a file may
    have 100,000 of them)."""
    column = (columns or {}).get("aspect_ratio", "aspect_ratio")
    allowed = ALLOWED_RATIOS
    code = "aspect_ratio_invalid"
    return [Issue(code, first + k, column, {"value": t.strip()[:40], "allowed": allowed}) for k, t in refused]


def simple_line(
    row: int,
    prompt: str,
    ratio_text: str,
    urls_text: str | list[Any] | None,
    errors: list[Issue],
    columns: dict[str, str] | None = None,
) -> bytes | None:
    """Validate one simple row (prompt, aspect ratio, image URLs); return its line.

    Appends every problem of the row to `errors` (not just the first) and returns None
    when there was any; otherwise the canonical line, serialized, newline-terminated.
    This runs once per row of every file, so it avoids work in the common cases.
    """
    n = len(errors)
    prompt = prompt.strip()
    if not prompt:
        errors.append(Issue("prompt_empty", row, (columns or {}).get("prompt", "prompt")))
    ratio = None
    if ratio_text:
        ratio = _ratio_cache.get(ratio_text, _MISS)
        if ratio is _MISS:
            ratio = normalize_ratio(ratio_text)
        if ratio is None and ratio_text.strip():
            errors.append(ratio_issue(row, ratio_text, columns))
    parts = b""
    if urls_text:
        if isinstance(urls_text, list):
            urls = [str(u).strip() for u in urls_text if str(u).strip()]
        else:
            urls = split_urls(urls_text)
        for url in urls:
            part = url_part(url)
            if type(part) is bytes:
                parts += part
            else:
                problem = part
                col = (columns or {}).get("image_urls", "image_urls")
                errors.append(Issue(problem, row, col, {"url": url[:200]}))
    if len(errors) > n:
        return None
    return _PREFIX + orjson.dumps(prompt) + b"}" + parts + _CONFIGS[ratio]


_MIME_TAIL = {m: b',"mimeType":' + orjson.dumps(m) + b"}}" for m in {*_MIME.values(), "image/jpeg"}}
_TAIL_BY_EXT = {ext: _MIME_TAIL[m] for ext, m in _MIME.items()}
_FILE_PART = b',{"fileData":{"fileUri":'
_PREFIX = b'{"contents":[{"role":"user","parts":[{"text":'
_CONFIGS = {
    r: b']}],"generationConfig":'
    + orjson.dumps(
        {"responseModalities": RESPONSE_MODALITIES, **({"imageConfig": {"aspectRatio": r}} if r else {})}
    )
    + b"}\n"
    for r in (None, *ASPECT_RATIOS)
}


_VERTEX_KEEP = ("contents", "generationConfig", "systemInstruction", "safetySettings")


def vertex_line(row: int, obj: dict[str, Any], errors: list[Issue]) -> dict[str, Any] | None:
    """Validate a Vertex request line; keep its content, make sure images are asked for."""
    n = len(errors)
    contents = obj.get("contents")
    texts = 0
    if not isinstance(contents, list) or not contents:
        errors.append(Issue("contents_invalid", row, "contents", {"reason": "not_a_list"}))
        return None
    for content in contents:
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            errors.append(Issue("contents_invalid", row, "contents", {"reason": "no_parts"}))
            return None
        for part in parts:
            if not isinstance(part, dict):
                errors.append(Issue("contents_invalid", row, "contents", {"reason": "bad_part"}))
                return None
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                texts += 1
            file_data = part.get("fileData")
            if isinstance(file_data, dict):
                uri = file_data.get("fileUri")
                if not isinstance(uri, str):
                    errors.append(Issue("image_url_invalid", row, "contents", {"url": str(uri)[:200]}))
                elif not uri.startswith("gs://"):
                    problem = url_problem(uri)
                    if problem:
                        errors.append(Issue(problem, row, "contents", {"url": uri[:200]}))
    if texts == 0:
        errors.append(Issue("prompt_empty", row, "contents"))
    config = obj.get("generationConfig", {})
    if not isinstance(config, dict):
        errors.append(Issue("generation_config_invalid", row, "generationConfig"))
        return None
    config = dict(config)
    config.setdefault("responseModalities", RESPONSE_MODALITIES)
    image_config = config.get("imageConfig")
    if isinstance(image_config, dict) and image_config.get("aspectRatio") is not None:
        raw = str(image_config["aspectRatio"])
        ratio = normalize_ratio(raw)
        if ratio is None:
            errors.append(
                Issue(
                    "aspect_ratio_invalid",
                    row,
                    "generationConfig",
                    {"value": raw[:40], "allowed": ALLOWED_RATIOS},
                )
            )
        else:
            config["imageConfig"] = {**image_config, "aspectRatio": ratio}
    if len(errors) > n:
        return None
    line = {k: obj[k] for k in _VERTEX_KEEP if k in obj}
    line["generationConfig"] = config
    return line


def prompt_of(line: dict[str, Any]) -> str:
    """All text parts of a canonical line, joined (for reports and markers)."""
    out = []
    for content in line.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
    return "\n".join(out)


def passes_service_check(line: dict[str, Any]) -> bool:
    """The service's own first-line check: `contents`, or `prompt` and no OpenAI keys."""
    if "contents" in line:
        return True
    return "prompt" in line and not any(k in line for k in ("method", "url", "body"))
