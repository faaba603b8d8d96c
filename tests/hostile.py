"""Generates hostile input files: `python -m tests.hostile OUT_DIR [--count N]`.

Fuzzed CSV/XLSX/XLS/JSONL, zip and XML entity bombs, a million phantom rows, wrong
extensions, odd encodings, NUL bytes, huge cells, zero rows, OpenAI batch lines. Seeded, so
every run writes the same files. Each file's name says what it is.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import zipfile
from pathlib import Path

from tests.files import (
    corner_cell_xls,
    corner_cell_xlsx,
    mutated_xls,
    overlapping_merges_xlsx,
    phantom_rows_sheet,
    rewrite_xlsx_member,
    xls,
    xlsx,
)

GOOD_CSV = "prompt,aspect_ratio,image_urls\nfox,16:9,https://a.com/x.png\n一只猫,1:1,\nowl,9:16,\n"
GOOD_JSONL = '{"prompt": "fox", "aspect_ratio": "16:9"}\n{"contents": [{"parts": [{"text": "owl"}]}]}\n'


def _mutate(data: bytes, rng: random.Random, n: int) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        op = rng.randrange(4)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 2 and b:
            del b[pos : pos + rng.randrange(1, 16)]
        else:
            b[pos:pos] = rng.choice(
                [b'"', b",", b"\n", b"\r", b"\x00", b"{", b"}", b"\xff\xfe", b"\xef\xbb\xbf"]
            )
    return bytes(b)


def generate(out: Path, count: int = 220, seed: int = 20261121) -> list[Path]:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def put(name: str, data: bytes) -> None:
        p = out / name
        p.write_bytes(data)
        files.append(p)

    tmp = out / ".build"
    tmp.mkdir(exist_ok=True)
    good_xlsx = xlsx(
        tmp / "good.xlsx", {"S": [["prompt", "ratio"], ["fox", "16:9"], ["owl", "1:1"]]}
    ).read_bytes()
    good_xls = xls(tmp / "good.xls", [["prompt", "ratio"], ["fox", "16:9"]]).read_bytes()
    # Fixed cases.
    put("zero-bytes.csv", b"")
    put("header-only.csv", b"prompt,aspect_ratio\n")
    put("blank-lines.jsonl", b"\n\n   \n")
    put("nul-bytes.csv", b"prompt\nfox\x00owl\n" + b"\x00" * 500)
    put("utf16-le-bom.csv", "\ufeffprompt\n一只猫\n".encode("utf-16-le"))
    put("utf16-be-nobom.csv", "prompt\nfox\n".encode("utf-16-be"))
    put("gb18030.csv", "提示词\n一只可爱的猫\n".encode("gb18030"))
    put("shift-jis.csv", "prompt\nねこ\n".encode("shift_jis"))
    put("latin1.csv", "prompt\ncafé crème\n".encode("latin-1"))
    put("huge-cell.csv", b"prompt\n" + b"x" * 200_000 + b"\n")
    put("huge-line.jsonl", b'{"prompt": "' + b"y" * 9_000_000 + b'"}\n')
    put(
        "openai-batch.jsonl",
        b'{"custom_id": "1", "method": "POST", "url": "/v1/x", "body": {"prompt": "a"}}\n' * 3,
    )
    put("json-array.jsonl", b'[{"prompt": "a"}]')
    put("pdf-as.csv", b"%PDF-1.7\n" + bytes(rng.randrange(256) for _ in range(400)))
    put("png-as.xlsx", b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(400)))
    put("xlsx-as.csv", good_xlsx)
    put("xls-as.jsonl", good_xls)
    put("csv-as.xlsx", GOOD_CSV.encode())
    put("private-urls.csv", b"prompt,image_urls\nfox,http://169.254.169.254/latest\nowl,http://[::1]/x\n")
    put("no-prompt-column.csv", b"name,size\nfox,1\n")
    put("formula-cells.csv", b"prompt\n=cmd|' /C calc'!A0\n+1+1\n@SUM(A1)\n")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", b"\0" * (300 * 1024 * 1024))
    put("zip-bomb.xlsx", bomb.getvalue())
    lol = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
        )
        + ']><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>prompt</t></si>'
        "<si><t>&lol9;</t></si></sst>"
    )
    put(
        "entity-bomb.xlsx",
        rewrite_xlsx_member(
            tmp / "good.xlsx", tmp / "lol.xlsx", "xl/sharedStrings.xml", lol.encode()
        ).read_bytes(),
    )
    put(
        "phantom-rows.xlsx",
        rewrite_xlsx_member(
            tmp / "good.xlsx", tmp / "ph.xlsx", "xl/worksheets/sheet1.xml", phantom_rows_sheet(1_000_000)
        ).read_bytes(),
    )
    # Sheets whose grid or merges a reader would build at absurd cost, and .xls files that
    # make the reader panic or abort (seeded mutations).
    hostile_sheets = [
        ("corner-cell.xlsx", lambda p: corner_cell_xlsx(p)),
        ("far-cell.xlsx", lambda p: corner_cell_xlsx(p, "XFD1000")),
        ("corner-cell.xls", corner_cell_xls),
        ("overlapping-merges.xlsx", lambda p: overlapping_merges_xlsx(p, 10_000)),
        ("overlapping-merges-narrow.xlsx", lambda p: overlapping_merges_xlsx(p, 10_000, "Z")),
        ("panic.xls", lambda p: mutated_xls(p, 20)),
        ("abort-at-open.xls", lambda p: mutated_xls(p, 207)),
    ]
    for name, build in hostile_sheets:
        put(name, build(tmp / name).read_bytes())
    # Fuzzed ones, until `count`.
    bases = [
        ("csv", GOOD_CSV.encode()),
        ("jsonl", GOOD_JSONL.encode()),
        ("xlsx", good_xlsx),
        ("xls", good_xls),
    ]
    i = 0
    while len(files) < count:
        ext, base = bases[i % len(bases)]
        data = _mutate(base, rng, rng.randrange(1, 30))
        if rng.random() < 0.1:
            ext = rng.choice(["csv", "xlsx", "jsonl", "txt", "bin"])  # wrong extension on purpose
        put(f"fuzz-{i:03d}.{ext}", data)
        i += 1
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=220)
    args = ap.parse_args()
    files = generate(args.out, args.count)
    print(json.dumps({"files": len(files), "dir": str(args.out)}))


if __name__ == "__main__":
    main()
