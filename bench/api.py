"""Agents' API benchmark: N submissions of R rows from C concurrent clients.

Ours: `batchjob-bot --api` (a process of its own, production poll settings) on a
redis-server of its own (or REDIS_URL, under a prefix of its own), each client POSTing rows
inline with confirm=true and a callback to a receiver in this process. Measured: accept
latency p50/p99 (request -> 202: checked, uploaded, estimated and submitted), submissions
per second, and callback delivery lag p99 (the job's end at the service -> its terminal
callback received). Baseline, in the same run: the same work through the `batchjob` CLI,
one process per submission (`batchjob submit rows.jsonl --json`), C at a time; it has no
callback (an agent would poll). Both sides talk to the same sandbox process.

    .venv/bin/python bench/api.py [--submissions 1000] [--rows 100] [--clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from machine import describe  # bench/ is on the path: the scripts run from there

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
TOKEN = "bench-token"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


class Receiver(ThreadingHTTPServer):
    """Terminal callbacks: submission id -> (time received, the job's end at the service)."""

    def __init__(self) -> None:
        self.ended: dict[str, tuple[float, float | None]] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.end_headers()
                doc = json.loads(body)
                if doc.get("event") == "terminal":
                    finished = (doc.get("job") or {}).get("finished_at")  # ISO (the sandbox: ms)
                    with outer.lock:
                        outer.ended.setdefault(doc["id"], (time.time(), finished))

            def log_message(self, *args: object) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/cb"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def wait_http(url: str, tries: int = 300) -> None:
    for _ in range(tries):
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench/api: {url} did not come up")


def rows_file(work: Path, rows: int) -> tuple[Path, list[dict[str, str]]]:
    data = [{"prompt": f"a lighthouse at dusk, variation {i}"} for i in range(rows)]
    path = work / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return path, data


async def ours(
    base: str, key: str, data: list[dict[str, str]], n: int, clients: int, receiver: Receiver
) -> dict:
    latencies: list[float] = []
    ids: list[str] = []
    sem = asyncio.Semaphore(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120, limits=limits
    ) as c:

        async def one(i: int) -> None:
            async with sem:
                body = {
                    "rows": data,
                    "confirm": True,
                    "callback": {"url": receiver.url},
                    "idempotency_key": f"b{i}",
                }
                t0 = time.perf_counter()
                r = await c.post("/v1/submissions", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 202 or r.json()["state"] not in ("submitted", "running", "completed"):
                    raise SystemExit(f"bench/api: submission refused: {r.status_code} {r.text[:300]}")
                ids.append(r.json()["id"])

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    deadline = time.time() + 300
    while time.time() < deadline:
        with receiver.lock:
            if all(i in receiver.ended for i in ids):
                break
        await asyncio.sleep(0.2)
    lags = []
    with receiver.lock:
        for i in ids:
            got, finished = receiver.ended.get(i, (None, None))
            if got is not None and finished:
                lags.append(got - datetime.fromisoformat(finished).timestamp())
    return {"latencies": latencies, "wall": wall, "lags": lags, "delivered": len(lags), "n": n}


async def baseline(path: Path, n: int, clients: int, env: dict[str, str]) -> dict:
    latencies: list[float] = []
    sem = asyncio.Semaphore(clients)

    async def one() -> None:
        async with sem:
            t0 = time.perf_counter()
            p = await asyncio.create_subprocess_exec(
                str(BIN / "batchjob"),
                "submit",
                str(path),
                "--json",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await p.wait() != 0:
                raise SystemExit("bench/api: batchjob submit failed")
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return {"latencies": latencies, "wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--baseline-submissions", type=int, default=None, help="default: as many as ours")
    args = ap.parse_args()
    print(describe())
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "BATCHJOB_BEARER_TOKEN": TOKEN}
    try:
        url = os.environ.get("REDIS_URL")
        if not url:
            if shutil.which("redis-server") is None:
                sys.exit("bench/api needs redis-server on PATH or REDIS_URL")
            port = free_port()
            procs.append(start(["redis-server", "--port", str(port), "--save", "", "--dir", str(work)], env))
            url = f"redis://127.0.0.1:{port}/0"
            time.sleep(0.3)
        sandbox_port, api_port = free_port(), free_port()
        procs.append(
            start(
                [
                    str(BIN / "batchjob"),
                    "sandbox",
                    "--port",
                    str(sandbox_port),
                    "--token",
                    TOKEN,
                    "--records-per-second",
                    "2000",
                    "--balance",
                    "1e12",  # both sides spend: neither may run short
                ],
                env,
            )
        )
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        wait_http(f"{sandbox}/v1/jobs")
        env |= {
            "BATCHJOB_BASE_URL": sandbox,
            "REDIS_URL": url,
            "BOT_REDIS_PREFIX": f"bapi{os.getpid()}",
            "BOT_LISTEN_PORT": str(api_port),
            "BOT_MEDIA_DIR": str(work / "media"),
            "BOT_UNSAFE_ALLOW_LOOPBACK_URLS": "true",  # the receiver is on this machine
            "BOT_MAX_DOWNLOAD_BYTES": str(50 << 20),
        }
        key = (
            subprocess.run(
                [str(BIN / "batchjob-bot"), "keys", "create", "--name", "bench", "--confirm"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.split("key: ", 1)[1]
            .split()[0]
        )
        procs.append(start([str(BIN / "batchjob-bot"), "--api"], env))
        base = f"http://127.0.0.1:{api_port}"
        wait_http(f"{base}/healthz")
        path, data = rows_file(work, args.rows)
        receiver = Receiver()
        o = asyncio.run(ours(base, key, data, args.submissions, args.clients, receiver))
        nb = args.baseline_submissions or args.submissions
        b = asyncio.run(baseline(path, nb, args.clients, env))
        print(
            f"{args.submissions} submissions of {args.rows} rows, {args.clients} concurrent clients "
            f"(baseline: {nb} CLI processes, {args.clients} at a time)"
        )
        print("| | ours (HTTP API) | baseline (batchjob CLI) | ratio |")
        print("|---|---|---|---|")
        for name, p in (("p50", 50), ("p99", 99)):
            a, z = pct(o["latencies"], p), pct(b["latencies"], p)
            print(f"| accept latency {name} | {a:.3f} s | {z:.3f} s | {z / a:.1f}× |")
        ra, rz = o["n"] / o["wall"], nb / b["wall"]
        print(f"| submissions per second | {ra:.1f} | {rz:.1f} | {ra / rz:.1f}× |")
        print(
            f"| callback lag p50 / p99 | {pct(o['lags'], 50):.1f} s / {pct(o['lags'], 99):.1f} s "
            f"({o['delivered']} of {o['n']} delivered) | none (polls) | |"
        )
    finally:
        if os.environ.get("REDIS_URL"):  # a Redis we were given: only our own keys go
            import redis

            r = redis.Redis.from_url(os.environ["REDIS_URL"])
            for k in r.scan_iter(match=f"bapi{os.getpid()}:*", count=1000):
                r.delete(k)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
