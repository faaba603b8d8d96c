"""What the sandbox's finished jobs produced: a small real image per successful record.

Each image (drawn with Pillow: the user-facing record number and the prompt's first words,
in the record's aspect ratio) is served two ways, so that both routes of the results reader
are exercised: as an `image_url` in the summary's records, and as Gemini-style
`inlineData` (base64) in a results JSON Lines file named by the job (`output_file_url`).
Failed records carry an error and no image.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import orjson

FAIL_ERROR = "generation failed (sandbox marker)"
LONG_SIDE = 192


def ratio_of(line: dict[str, Any]) -> str:
    cfg = line.get("generationConfig")
    image = cfg.get("imageConfig") if isinstance(cfg, dict) else None
    ratio = image.get("aspectRatio") if isinstance(image, dict) else None
    return ratio if isinstance(ratio, str) and len(ratio) <= 8 else "1:1"


def _size(ratio: str) -> tuple[int, int]:
    try:
        w, h = (float(x) for x in ratio.split(":", 1))
    except ValueError:
        w = h = 1.0
    if not (0 < w <= 100 and 0 < h <= 100):
        w = h = 1.0
    if w >= h:
        return LONG_SIDE, max(16, round(LONG_SIDE * h / w))
    return max(16, round(LONG_SIDE * w / h)), LONG_SIDE


@lru_cache(maxsize=256)
def draw(record: int, prompt: str, ratio: str) -> bytes:
    """A PNG: record number (1-based) and the prompt's first words on a colour of its own."""
    from PIL import Image, ImageDraw

    size = _size(ratio)
    hue = (record * 67) % 255
    img = Image.new("RGB", size, (40 + hue // 2, 90, 200 - hue // 2))
    pen = ImageDraw.Draw(img)
    words = " ".join(prompt.split()[:4])[:28]
    pen.text((8, 8), f"#{record + 1}", fill=(255, 255, 255))
    pen.text((8, 24), words.encode("ascii", "replace").decode(), fill=(255, 255, 230))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def summary_records(
    processed: int, fail: set[int], prompts: list[str], image_url: str
) -> list[dict[str, Any]]:
    """The summary's records; `image_url` has a `{i}` for the record's index."""
    return [
        {
            "index": i,
            "status": "failed" if i in fail else "succeeded",
            "error": FAIL_ERROR if i in fail else None,
            "prompt": prompts[i] if i < len(prompts) else None,
            **({} if i in fail else {"image_url": image_url.format(i=i)}),
        }
        for i in range(processed)
    ]


def results_lines(processed: int, fail: set[int], prompts: list[str], ratios: list[str]) -> Iterator[bytes]:
    """The results file: one Gemini-style response per record, images inline (base64)."""
    for i in range(processed):
        prompt = prompts[i] if i < len(prompts) else ""
        if i in fail:
            line: dict[str, Any] = {"key": f"record-{i}", "error": {"code": 500, "message": FAIL_ERROR}}
        else:
            png = draw(i, prompt, ratios[i] if i < len(ratios) else "1:1")
            parts = [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png).decode()}}]
            line = {
                "key": f"record-{i}",
                "response": {"candidates": [{"content": {"role": "model", "parts": parts}}]},
            }
        yield orjson.dumps({**line, "request": {"contents": [{"parts": [{"text": prompt}]}]}}) + b"\n"
