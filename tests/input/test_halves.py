"""A large CSV converted in two processes gives exactly the one-process result.

The conversions run in a fresh single-threaded Python (the two-process path forks), over
files built to put the cut in awkward places: quoted cells spanning lines across the middle,
stray quotes that make the quote count lie, invalid, blank and title rows, other encodings
and delimiters, CRLF. Each file is converted both ways; output bytes and reports must match,
and the two-process path must have been taken when the cut is sound.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = r"""
import json, os, sys
from pathlib import Path
from batchjob.input import halves, pipeline

halves.MIN_BYTES = 0  # small test files take the two-process path too
if os.environ.get("CHILD_DIES"):
    halves._second_half = lambda *a: os._exit(3)
taken = []
real = halves.convert_halves
def spy(*a, **k):
    r = real(*a, **k)
    taken.append(r)
    return r
halves.convert_halves = spy
results = {}
for src in sys.argv[1:]:
    runs = []
    for two in (False, True):
        taken.clear()
        dst = Path(src + (".two" if two else ".one") + ".jsonl")
        report = pipeline.convert_file(src, dst, skip_invalid=True, halves=two)
        runs.append((report.to_dict("en"), dst.read_bytes() if dst.exists() else None, list(taken)))
    (r1, o1, _), (r2, o2, t2) = runs
    results[src] = {"same_report": r1 == r2, "same_output": o1 == o2, "taken": t2,
                    "valid": r1["rows"]["valid"], "errors": len(r1["errors"])}
print(json.dumps(results))
"""


def check(files: list[Path], **env: str) -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def rows(rng: random.Random, n: int) -> list[list[str]]:
    words = ["fox", "owl", "雪山", "小木屋", "neon, city", 'a "quoted" word', "line\nbreak", "(red:1.2)"]
    ratios = ["16:9", "1:1", "4:3", "", "7:5", "16x9", "９：１６"]
    urls = [
        "",
        "",
        "https://cdn.example.com/a.png",
        "http://127.0.0.1/x.png",
        "https://e.com/a.jpg, https://e.com/b.webp",
    ]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append(["", "", ""])  # blank
        elif r < 0.06:
            out.append(["", "1:1", ""])  # no prompt
        else:
            prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
            out.append([prompt, rng.choice(ratios), rng.choice(urls)])
    return out


def write_csv(
    path: Path, data: list[list[str]], *, encoding="utf-8", delimiter=",", newline="\n", title=False
):
    import csv

    with open(path, "w", encoding=encoding, newline="") as f:
        if title:
            f.write("Prompts for the spring campaign" + newline + newline)
        w = csv.writer(f, delimiter=delimiter, lineterminator=newline)
        w.writerow(["prompt", "aspect_ratio", "image_urls"])
        w.writerows(data)
    return path


def test_two_processes_give_the_one_process_result(tmp_path):
    rng = random.Random(20261121)
    files = [
        write_csv(tmp_path / "plain.csv", rows(rng, 3000)),
        write_csv(tmp_path / "bom.csv", rows(rng, 3000), encoding="utf-8-sig"),
        write_csv(tmp_path / "gb.csv", rows(rng, 3000), encoding="gb18030"),
        write_csv(tmp_path / "tabs.tsv", rows(rng, 3000), delimiter="\t"),
        write_csv(tmp_path / "crlf.csv", rows(rng, 3000), newline="\r\n", title=True),
    ]
    for i in range(25):  # random sizes and mixes
        files.append(write_csv(tmp_path / f"r{i}.csv", rows(rng, rng.randint(5, 4000)), title=i % 3 == 0))
    results = check(files)
    for name, r in results.items():
        assert r["same_output"] and r["same_report"], name
    # The cut was sound in files written by a CSV writer: the two-process path was used.
    assert all(r["taken"] == [True] for r in results.values())
    assert sum(r["valid"] for r in results.values()) > 10_000 and all(r["errors"] for r in results.values())


def test_a_stray_quote_that_misleads_the_cut_falls_back_to_one_process(tmp_path):
    # `5" screen` is a literal quote in an unquoted cell: the quote count before the middle is
    # odd, so the first "even" line end is inside the quoted two-line cell placed there.
    n = 2000
    lines = ["prompt,aspect_ratio", 'a 5" screen,16:9']
    lines += [f"prompt {i},1:1" for i in range(n)]
    lines.insert(len(lines) // 2, '"first line\nsecond line",4:3')
    src = tmp_path / "stray.csv"
    src.write_text("\n".join(lines) + "\n")
    r = check([src])[str(src)]
    assert r["taken"] == [False]  # the sentinel showed the cut was not between records
    assert r["same_output"] and r["same_report"] and r["valid"] == n + 2


def test_a_second_half_that_dies_falls_back_to_one_process(tmp_path):
    src = write_csv(tmp_path / "p.csv", rows(random.Random(1), 3000))
    r = check([src], CHILD_DIES="1")[str(src)]
    assert r["taken"] == [False] and r["same_output"] and r["same_report"]


def test_the_command_line_converts_a_large_csv_in_two_processes(tmp_path):
    from batchjob.input import convert_file
    from batchjob.input.halves import MIN_BYTES

    src = tmp_path / "big.csv"
    rng = random.Random(7)
    data = []
    while sum(len(",".join(r)) for r in data) < MIN_BYTES + 100_000:
        data += rows(rng, 2000)
    write_csv(src, data)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchjob.cli",
            "convert",
            str(src),
            "-o",
            str(tmp_path / "two.jsonl"),
            "--skip-invalid",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    one = convert_file(src, tmp_path / "one.jsonl", skip_invalid=True)
    assert one.valid > 0 and (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert f"{one.valid} lines" in out.stdout.replace(",", "")
