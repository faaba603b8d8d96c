"""Reading benchmark: CPU a file costs in the parse worker (the zygote and the child it forks
for each file, isolation included) against converting the same file in this process, in
the same run.

A 1,000-row CSV (the size bench/e2e drops) is converted `--files` times through
`batchjob.input.isolation`'s worker, one after another, then as many times in process; the
worker's CPU is read from /proc (its own and its waited-for children's). Rounds alternate
the two so a burst of other load cannot land on one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import describe  # noqa: E402 (bench/ is on the path: the scripts run from there)


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def main(files: int, rounds: int) -> None:
    from batchjob.input import isolation, pipeline
    from batchjob.input.limits import Limits

    tmp = Path(tempfile.mkdtemp(prefix="bench-reading-"))
    csv = tmp / "prompts.csv"
    csv.write_text(
        "prompt,aspect_ratio\n" + "".join(f"a watercolor fox number {i},16:9\n" for i in range(1000))
    )
    limits = Limits()
    worker = isolation.worker()
    await isolation.wait_async(
        worker.submit("convert", str(csv), str(tmp / "w.jsonl"), skip_invalid=True, limits=limits),
        str(csv),
        limits,
    )
    pid = worker.pid
    assert pid is not None
    isolated, inline = [], []
    for r in range(rounds):
        c0 = cpu_of(pid)
        for i in range(files):
            out = tmp / f"o{r}-{i}.jsonl"  # a new name each time, as the bot's are
            reading = worker.submit("convert", str(csv), str(out), skip_invalid=True, limits=limits)
            await isolation.wait_async(reading, str(csv), limits)
            out.unlink()
        isolated.append((cpu_of(pid) - c0) / files * 1000)
        t0 = time.process_time()
        for i in range(files):
            out = tmp / f"i{r}-{i}.jsonl"
            pipeline.convert_file(str(csv), str(out), skip_invalid=True, limits=limits)
            out.unlink()
        inline.append((time.process_time() - t0) / files * 1000)
    worker.close()
    print(f"{files} conversions of a 1,000-row CSV a round, {rounds} rounds; CPU ms a file")
    print("worker + child " + " ".join(f"{x:6.2f}" for x in isolated))
    print("in process     " + " ".join(f"{x:6.2f}" for x in inline))
    print(f"isolated / in process: {min(isolated) / min(inline):.2f}x (best rounds)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(describe())
    asyncio.run(main(args.files, args.rounds))
