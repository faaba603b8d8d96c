"""What each class of hostile file costs: outcome, wall time, peak memory of caller and worker.

Builds the files (a cell at a sheet's far corner, overlapping merges, .xls files that make
the reader panic or abort, a 50 MB one-line CSV, and a corner cell with the sheet bounds
lifted so that only the worker's memory cap stands between the reader and 512 GiB), then
reads each in a fresh process, as the bot would (`isolation.inspect_file`), and prints:

  outcome   the report's file-level code, or how the process died
  wall s    the whole read, worker start included
  caller    peak RSS of the reading process (the bot or the CLI)
  worker    peak RSS of the parse worker and its child for that file

`--python PY` reads with another install's interpreter (e.g. an older release, which
reads in its own process: then "worker" is empty and a crash is the caller's). Needs the
dev extra (openpyxl, xlwt) to build the files.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(d: Path) -> dict[str, tuple[Path, dict[str, int]]]:
    """The files, written into `d` (run in a child: a process's peak RSS survives exec, so
    the measuring parent must stay small)."""
    sys.path.insert(0, str(ROOT))
    from tests.files import corner_cell_xls, corner_cell_xlsx, mutated_xls, overlapping_merges_xlsx

    one_line = d / "one-line-50MB.csv"
    one_line.write_bytes(b"prompt," + b"x" * 50_000_000)
    loose = {"max_sheet_columns": 20_000, "max_sheet_cells": 10**13}
    return {
        "corner XFD1048576.xlsx": (corner_cell_xlsx(d / "corner.xlsx"), {}),
        "far cell XFD1000.xlsx": (corner_cell_xlsx(d / "far.xlsx", "XFD1000"), {}),
        "corner IV65536.xls": (corner_cell_xls(d / "corner.xls"), {}),
        "10k merges A3:XFD<n>": (overlapping_merges_xlsx(d / "merges.xlsx", 10_000), {}),
        "10k merges A3:Z<n>": (overlapping_merges_xlsx(d / "merges-z.xlsx", 10_000, "Z"), {}),
        "mutated xls (panic)": (mutated_xls(d / "panic.xls", 20), {}),
        "mutated xls (abort)": (mutated_xls(d / "abort.xls", 207), {}),
        "one-line CSV 50 MB": (one_line, {}),
        "corner, bounds lifted": (d / "corner.xlsx", loose),
    }


def read_one(path: str, limits_json: str) -> None:
    """In a fresh process: read the file as the bot does, print the figures as JSON."""
    from batchjob.input import Limits

    known = Limits.__dataclass_fields__
    limits = replace(Limits.from_env(), **{k: v for k, v in json.loads(limits_json).items() if k in known})
    t0 = time.perf_counter()
    try:
        from batchjob.input import isolation
    except ImportError:  # an older release: it reads in its own process
        from batchjob.input import inspect_file

        report = inspect_file(path, limits)
    else:
        report = isolation.inspect_file(path, limits)
        isolation.worker().close()  # waited for: its peak counts among our children
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "outcome": report.fatal.code if report.fatal else f"ok ({report.valid} valid)",
                "wall": wall,
                "caller": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="interpreter of the install to measure")
    ap.add_argument("--one", nargs=2, metavar=("PATH", "LIMITS"), help=argparse.SUPPRESS)
    ap.add_argument("--build", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        read_one(*args.one)
        return
    if args.build:
        print(json.dumps({k: (str(p), lim) for k, (p, lim) in build(Path(args.build)).items()}))
        return
    print(f"{'file':<24}{'outcome':<26}{'wall s':>8}{'caller':>9}{'worker':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        listing = subprocess.run(
            [sys.executable, __file__, "--build", tmp], check=True, capture_output=True, text=True
        ).stdout
        for name, (path, limits) in json.loads(listing).items():
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            t0 = time.perf_counter()
            try:
                p = subprocess.run(
                    [args.python, __file__, "--one", str(path), json.dumps(limits)],
                    capture_output=True,
                    text=True,
                    timeout=600,
                    env=env,
                    cwd=tmp,
                )
            except subprocess.TimeoutExpired:
                print(f"{name:<24}{'still running at 600 s':<26}")
                continue
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                died = f"died ({-p.returncode if p.returncode < 0 else p.returncode})"
                if p.returncode < 0:
                    import signal

                    died = f"process died: {signal.Signals(-p.returncode).name}"
                elif "PanicException" in p.stderr:
                    died = "process died: panic"
                print(f"{name:<24}{died:<26}{wall:>8.2f}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            worker = f"{r['worker']:>8.0f}M" if r["worker"] > 1 else f"{'-':>9}"
            print(f"{name:<24}{r['outcome']:<26}{r['wall']:>8.2f}{r['caller']:>8.0f}M{worker}")


if __name__ == "__main__":
    main()
