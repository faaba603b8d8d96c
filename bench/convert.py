"""Benchmark `batchjob convert` against the floor and the pandas route, as whole processes.

Generates its own data (100k rows of mixed Chinese/English prompts of ~85 chars with 0-2
image URLs) as UTF-8-BOM CSV, GB18030 CSV and XLSX, plus a 65k-row XLS, then measures,
in the same run, wall time and peak RSS of:

  convert  `batchjob convert FILE -o OUT` (detect, validate every row, canonical JSONL)
  py       for context: the same with BATCHJOB_NATIVE=0 (every row read in Python, as on a
           machine where the native row scanner could not be built)

Two more CSV files are the native scanner's worst case, rows it leaves to Python:
csv-weights (every prompt has weight syntax) and csv-invalid (every other ratio invalid;
converted with --skip-invalid). They have the same goal as the others: <= 1.5x the floor.
  floor    a bare loop: stdlib csv (or calamine iter_rows) + orjson, no validation
  pandas   read_csv / read_excel + to_json(lines=True), what a user would otherwise do
           (flat simple lines: its fastest path, without any checks)
  pd→vtx   for context: pandas building the same canonical Vertex lines as ours (apply per
           row), which the flat route does not produce; not a target

Every side is a whole process, so each pays its own interpreter start and library imports
(ours: batchjob; floor: csv/calamine + orjson; pandas: pandas). The runs are interleaved:
each round measures every tool once, in a rotating order, so a burst of other load on this
shared machine lands on one round rather than on one tool; the fastest round is kept.

Targets: convert wall <= 1.5x floor on every file (worst cases included); >= 3x faster than
pandas on the four everyday files (the worst cases' goal is the floor's: pandas checks
nothing, and half of csv-invalid's rows are problems to report); peak RSS <= 80 MiB on the
100k CSVs and <= 150 MiB on the 100k XLSX. Each is judged and printed on its own. Needs the
`bench` extra (pandas, xlrd, xlwt).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # bench/ is on the path: the scripts run from there

ROOT = Path(__file__).resolve().parents[1]

EN = (
    "a watercolor fox",
    "neon city street at night",
    "portrait of an old sailor",
    "flat vector icon",
    "cinematic lighting",
    "soft pastel colors",
    "ultra detailed",
    "misty mountains at dawn",
    "a red bicycle",
    "studio product shot",
    "white background",
    "isometric room",
)
ZH = (
    "一只可爱的橘猫",
    "赛博朋克城市夜景",
    "水墨山水画",
    "电影感光线",
    "柔和的色彩",
    "细节丰富",
    "雪山下的小木屋",
    "白色背景产品图",
    "复古海报风格",
    "森林里的小鹿",
)
RATIOS = ("", "1:1", "16:9", "9:16", "4:3", "3:4")

FLOOR_CSV = """
import csv, sys, orjson
src, enc, out = sys.argv[1:4]
with open(src, encoding=enc, newline="") as f, open(out, "wb") as o:
    r = csv.reader(f)
    header = next(r)
    for row in r:
        o.write(orjson.dumps(dict(zip(header, row)), option=orjson.OPT_APPEND_NEWLINE))
"""
FLOOR_SHEET = """
import sys, orjson
from python_calamine import CalamineWorkbook
src, out = sys.argv[1:3]
wb = CalamineWorkbook.from_path(src)
rows = wb.get_sheet_by_index(0).iter_rows()
header = [str(h) for h in next(rows)]
with open(out, "wb") as o:
    for row in rows:
        o.write(orjson.dumps(dict(zip(header, row)), option=orjson.OPT_APPEND_NEWLINE, default=str))
"""
PANDAS = """
import sys, pandas as pd
src, kind, enc, out = sys.argv[1:5]
if kind == "csv":
    df = pd.read_csv(src, encoding=enc, dtype=str, keep_default_na=False)
else:
    df = pd.read_excel(src, dtype=str, keep_default_na=False)
df.to_json(out, orient="records", lines=True, force_ascii=False)
"""
PANDAS_VERTEX = """
import sys, pandas as pd
src, kind, enc, out = sys.argv[1:5]
if kind == "csv":
    df = pd.read_csv(src, encoding=enc, dtype=str, keep_default_na=False)
else:
    df = pd.read_excel(src, dtype=str, keep_default_na=False)
def line(r):
    urls = [u.strip() for u in r["image_urls"].split(",") if u.strip()]
    parts = [{"text": r["prompt"]}] + [{"fileData": {"fileUri": u, "mimeType": "image/png"}} for u in urls]
    config = {"responseModalities": ["IMAGE", "TEXT"]}
    if r["aspect_ratio"]:
        config["imageConfig"] = {"aspectRatio": r["aspect_ratio"]}
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
pd.DataFrame(df.apply(line, axis=1).tolist()).to_json(out, orient="records", lines=True, force_ascii=False)
"""


def prompt(rng: random.Random) -> str:
    parts: list[str] = []
    while sum(len(p) + 2 for p in parts) < 80:
        parts.append(rng.choice(EN if rng.random() < 0.5 else ZH))
    return ", ".join(parts)[:85]


def rows(n: int, seed: int = 7) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.choice((0, 0, 1, 2))
        urls = ", ".join(f"https://cdn.example.com/ref/{i}-{j}.png" for j in range(k))
        out.append([prompt(rng), rng.choice(RATIOS), urls])
    return out


def make_data(d: Path, n: int, n_xls: int) -> dict[str, tuple[Path, str, str]]:
    header = ["prompt", "aspect_ratio", "image_urls"]
    data = rows(n)
    files: dict[str, tuple[Path, str, str]] = {}
    for name, enc in (("csv-utf8-bom", "utf-8-sig"), ("csv-gb18030", "gb18030")):
        p = d / f"{name}.csv"
        with open(p, "w", encoding=enc, newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(data)
        files[name] = (p, "csv", enc)
    # The native scanner's worst case: rows it leaves to Python's checks, every one (weight
    # syntax, which is warned about) or every other one (an invalid ratio).
    hard = {
        "csv-weights": [[f"(masterpiece:1.2), {r[0]}", r[1], r[2]] for r in data],
        "csv-invalid": [[r[0], "7:5" if i % 2 else r[1], r[2]] for i, r in enumerate(data)],
    }
    for name, table in hard.items():
        p = d / f"{name}.csv"
        with open(p, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(table)
        files[name] = (p, "csv", "utf-8")
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("prompts")
    ws.append(header)
    for r in data:
        ws.append(r)
    p = d / "prompts.xlsx"
    wb.save(p)
    files["xlsx"] = (p, "xlsx", "")
    import xlwt

    book = xlwt.Workbook(encoding="utf-8")
    sheet = book.add_sheet("prompts")
    for c, h in enumerate(header):
        sheet.write(0, c, h)
    for r, row in enumerate(data[:n_xls], 1):
        for c, v in enumerate(row):
            sheet.write(r, c, v)
    p = d / "prompts.xls"
    book.save(str(p))
    files["xls"] = (p, "xls", "")
    return files


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


def interleaved(
    cells: list[tuple[list[str], dict[str, str] | None]], repeat: int
) -> list[tuple[float, float]]:
    """Each round runs every cell once (the order rotates from round to round); per cell the
    fastest wall (the run least disturbed by other load) and the largest peak RSS."""
    runs: list[list[tuple[float, float]]] = [[] for _ in cells]
    for r in range(repeat):
        order = list(range(len(cells)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            runs[i].append(measure(*cells[i]))
    return [(min(w for w, _ in cell), max(m for _, m in cell)) for cell in runs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--xls-rows", type=int, default=65_000)
    ap.add_argument("--repeat", type=int, default=5, help="runs per cell; the fastest wall is kept")
    ap.add_argument("--generate-into", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_into:
        files = make_data(Path(args.generate_into), args.rows, args.xls_rows)
        print(json.dumps({k: (str(p), kind, enc) for k, (p, kind, enc) in files.items()}))
        return
    py = sys.executable
    # The installed console script, as a user runs it.
    batchjob = str(Path(py).with_name("batchjob"))
    # Bytecode compiled up front, as an installed package has it (this machine may set
    # PYTHONDONTWRITEBYTECODE, which would make every run recompile our modules).
    subprocess.run([py, "-m", "compileall", "-q", str(ROOT / "batchjob"), str(ROOT / "locales")], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        print(f"generating {args.rows} rows (xls: {args.xls_rows}) ...", file=sys.stderr)
        # In a child process, so the measuring parent stays small: a forked child's peak
        # RSS starts from the parent's.
        listing = subprocess.run(
            [
                py,
                __file__,
                "--generate-into",
                tmp,
                "--rows",
                str(args.rows),
                "--xls-rows",
                str(args.xls_rows),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        files = {k: (Path(p), kind, enc) for k, (p, kind, enc) in json.loads(listing).items()}
        out = str(d / "out.jsonl")
        table = []
        for name, (path, kind, enc) in files.items():
            size = path.stat().st_size / 2**20
            convert = [batchjob, "convert", str(path), "-o", out, "--skip-invalid"]
            if kind == "csv":
                floor_cmd = [py, "-c", FLOOR_CSV, str(path), enc, out]
            else:
                floor_cmd = [py, "-c", FLOOR_SHEET, str(path), out]
            cells: list[tuple[list[str], dict[str, str] | None]] = [
                (convert, None),
                (convert, {**os.environ, "BATCHJOB_NATIVE": "0"}),
                (floor_cmd, None),
                ([py, "-c", PANDAS, str(path), kind, enc or "utf-8", out], None),
                ([py, "-c", PANDAS_VERTEX, str(path), kind, enc or "utf-8", out], None),
            ]
            ours, py_only, floor, pandas, vertex = interleaved(cells, args.repeat)
            table.append((name, size, ours, py_only, floor, pandas, vertex))
    print(describe())
    print(
        f"{'file':<14}{'MiB':>6}  {'convert s':>9} {'py s':>6} {'floor s':>8} "
        f"{'pandas s':>8} {'pd→vtx s':>8}  "
        f"{'conv/floor':>10} {'pandas/conv':>11} {'py/conv':>8} {'pd→vtx/conv':>11}  "
        f"{'RSS conv':>8} {'py':>5} {'floor':>6} {'pandas':>7} {'pd→vtx':>7}"
    )
    for name, size, (cw, cm), (yw, ym), (fw, fm), (pw, pm), (vw, vm) in table:
        print(
            f"{name:<14}{size:>6.1f}  {cw:>9.2f} {yw:>6.2f} {fw:>8.2f} {pw:>8.2f} {vw:>8.2f}  "
            f"{cw / fw:>9.2f}x {pw / cw:>10.2f}x {yw / cw:>7.2f}x {vw / cw:>10.2f}x"
            f"  {cm:>7.0f}M {ym:>4.0f}M {fm:>5.0f}M {pm:>6.0f}M {vm:>6.0f}M"
        )
    everyday = ("csv-utf8-bom", "csv-gb18030", "xlsx", "xls")
    rss_mib = {n: 80 if n.startswith("csv") else 150 for n, *_ in table if n != "xls"}  # no goal for xls
    goals = (
        ("<= 1.5x floor, every file", [n for n, _, (cw, _), _, (fw, _), _, _ in table if cw > 1.5 * fw]),
        (
            ">= 3x faster than pandas, " + ", ".join(everyday),
            [n for n, _, (cw, _), _, _, (pw, _), _ in table if n in everyday and pw < 3 * cw],
        ),
        (
            "peak RSS <= 80 MiB (CSV), <= 150 MiB (xlsx)",
            [n for n, _, (_, cm), *_ in table if cm > rss_mib.get(n, float("inf"))],
        ),
    )
    for goal, missed in goals:
        print(f"target {goal}: {'met' if not missed else 'NOT met (' + ', '.join(missed) + ')'}")


if __name__ == "__main__":
    main()
