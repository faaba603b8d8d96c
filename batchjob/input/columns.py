"""Header mapping tolerant of real files: case, spaces, punctuation, English and Chinese."""

from __future__ import annotations

import re
import unicodedata

FIELDS = ("prompt", "aspect_ratio", "image_urls")

_ALIASES: dict[str, tuple[str, ...]] = {
    "prompt": (
        "prompt",
        "prompts",
        "prompttext",
        "text",
        "positiveprompt",
        "description",
        "imageprompt",
        "提示词",
        "提示",
        "提示语",
        "正向提示词",
        "正面提示词",
        "描述",
        "文本",
        "文案",
        "画面描述",
        "内容",
    ),
    "aspect_ratio": (
        "aspectratio",
        "aspect",
        "ratio",
        "ar",
        "size",
        "比例",
        "宽高比",
        "画幅",
        "画面比例",
        "图片比例",
        "尺寸",
        "长宽比",
    ),
    "image_urls": (
        "imageurls",
        "imageurl",
        "images",
        "image",
        "imagelinks",
        "urls",
        "url",
        "referenceimages",
        "referenceimage",
        "refimages",
        "inputimages",
        "参考图",
        "参考图片",
        "参考图链接",
        "图片",
        "图片链接",
        "图片地址",
        "图片url",
        "图像链接",
        "链接",
    ),
    # Recognized so the report can say why it is not used: the model has no negative prompt.
    "negative_prompt": (
        "negative",
        "negativeprompt",
        "negativeprompts",
        "negprompt",
        "反向提示词",
        "负面提示词",
        "负向提示词",
        "反向词",
    ),
}
_LOOKUP = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_NOISE = re.compile(r"[\s_\-.:：/\\*#]+")
_BRACKETED = re.compile(r"[(（\[【].*?[)）\]】]")

EXPECTED = {
    "prompt": "prompt / 提示词",
    "aspect_ratio": "aspect_ratio / 比例",
    "image_urls": "image_urls / 参考图",
}


def _key(text: str) -> str:
    return _NOISE.sub("", unicodedata.normalize("NFKC", text).lower())


def field_for(header: str) -> str | None:
    """The field a header names, or None. `Prompt (提示词)` and `提示词*` both map."""
    if not header:
        return None
    key = _key(header)
    if key in _LOOKUP:
        return _LOOKUP[key]
    bare = _key(_BRACKETED.sub("", unicodedata.normalize("NFKC", header)))
    if bare in _LOOKUP:
        return _LOOKUP[bare]
    for inner in _BRACKETED.findall(unicodedata.normalize("NFKC", header)):
        k = _key(inner[1:-1])
        if k in _LOOKUP:
            return _LOOKUP[k]
    return None
