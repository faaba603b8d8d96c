"""Peak memory of uploading a 50 MB JSONL to the sandbox: our streaming client vs a naive one.

Each client runs as its own process (peak RSS from wait4), against a sandbox started by
this script on a free port of 127.0.0.1. The naive client builds
`json.dumps({"filename", "mode", "content": base64})` in memory and posts it with httpx.
A third process imports the same modules and uploads nothing: its peak is subtracted
from both, giving the extra memory an upload costs. Target: ours <= 1.5x the file size.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

TOKEN = "bench-token"

OURS = """
import asyncio, sys
from batchjob.client import BatchJobClient, Timeouts
async def main():
    async with BatchJobClient(sys.argv[1], sys.argv[2], timeouts=Timeouts(read=300, write=300)) as c:
        r = await c.upload(sys.argv[3])
        assert r.row_count > 0, r
asyncio.run(main())
"""
NAIVE = """
import base64, json, sys, httpx
from batchjob.client import BatchJobClient
body = json.dumps({"filename": "big.jsonl", "mode": "fast",
                   "content": base64.b64encode(open(sys.argv[3], "rb").read()).decode()})
r = httpx.post(sys.argv[1] + "/v1/batch/files:upload", content=body,
               headers={"Authorization": "Bearer " + sys.argv[2], "Content-Type": "application/json"},
               timeout=300)
assert r.status_code == 200, r.text
"""
IDLE = """
import asyncio, base64, json, sys, httpx
from batchjob.client import BatchJobClient
async def main():
    async with BatchJobClient(sys.argv[1], sys.argv[2]) as c:
        pass
asyncio.run(main())
"""


def make_file(path: Path, size: int) -> None:
    line_no = 0
    with open(path, "wb") as f:
        while f.tell() < size:
            line_no += 1
            prompt = f"prompt {line_no}: a watercolor fox under a maple tree, 一只可爱的橘猫, soft light " * 5
            f.write(orjson.dumps({"prompt": prompt[:400], "aspect_ratio": "16:9"}) + b"\n")


def peak_rss(code: str, *args: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(proc.stderr.read().decode() if proc.stderr else "failed")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="file size in MB (10^6 bytes)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        make_file(path, int(args.mb * 1_000_000))
        size_mib = path.stat().st_size / 2**20
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        sandbox = subprocess.Popen(
            [sys.executable, "-m", "batchjob.cli", "sandbox", "--port", str(port), "--token", TOKEN],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise SystemExit("sandbox did not start") from None
                    time.sleep(0.1)
            idle, _ = peak_rss(IDLE, url, TOKEN, str(path))
            ours, t_ours = peak_rss(OURS, url, TOKEN, str(path))
            naive, t_naive = peak_rss(NAIVE, url, TOKEN, str(path))
        finally:
            sandbox.terminate()
            sandbox.wait()
    print(f"file: {size_mib:.1f} MiB; idle client process: {idle:.0f} MiB peak RSS")
    print(f"{'client':<8}{'peak MiB':>9}{'extra MiB':>10}{'extra/file':>11}{'wall s':>8}")
    for name, peak, wall in (("ours", ours, t_ours), ("naive", naive, t_naive)):
        print(f"{name:<8}{peak:>9.0f}{peak - idle:>10.0f}{(peak - idle) / size_mib:>10.2f}x{wall:>8.1f}")
    print(f"naive/ours extra memory: {(naive - idle) / max(ours - idle, 1):.1f}x")


if __name__ == "__main__":
    main()
