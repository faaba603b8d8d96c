"""Scale-out benchmark: 1 and 3 real `batchjob-bot` replicas (webhook mode) on one Redis and
on a three-master Redis Cluster, behind a forwarder that delivers like Telegram.

Every chat drops a CSV at once, confirms its estimate ("model mode") and waits for its
summary; the fake Bot API server counts every message (sends and edits) with the real flood
limits on (30 messages/s for the whole bot, 1/s per chat). Per run: p50/p99 document ->
first reply and confirmation -> job accepted, jobs finished per minute, messages sent and
how close the run gets to Telegram's bound (bound = messages / 30 s; ratio = wall / bound:
1.0 is the physical limit), flood breaches; with --kill, replica 0 is killed with SIGKILL
while documents are in flight, and the time from the kill to the last summary is reported.
On the cluster: the share of commands each node served.

    .venv/bin/python bench/scale.py --chats 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def node_commands(ports: list[int]) -> list[int]:
    out = []
    for port in ports:
        info = subprocess.run(["redis-cli", "-p", str(port), "info", "stats"], capture_output=True, text=True)
        line = next(x for x in info.stdout.splitlines() if x.startswith("total_commands_processed:"))
        out.append(int(line.split(":")[1]))
    return out


async def run(replicas: int, redis_url: str, chats: int, rows: int, kill: bool, ports: list[int]) -> dict:
    from batchjob.sandbox_server import SandboxServer
    from batchjob.sandbox_state import SandboxConfig
    from conversation.store import connect
    from tests.e2e.fake_telegram import FakeTelegram
    from tests.scale.harness import Fleet, Forwarder, Run, drive

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    sandbox = SandboxServer(
        SandboxConfig(token="bench", records_per_second=200, queue_seconds=0.2, balance=10**9)
    ).start()
    telegram = FakeTelegram().start()
    files = {}
    for chat in range(1, chats + 1):
        path = work / f"p{chat}.csv"
        path.write_text(
            "prompt,aspect_ratio\n" + "".join(f"fox {chat} number {i},16:9\n" for i in range(rows))
        )
        files[chat] = path
    prefix = f"bench{secrets.token_hex(3)}"
    fleet = Fleet(
        replicas,
        redis_url=redis_url,
        telegram=telegram,
        sandbox=sandbox,
        service_token="bench",
        workdir=work,
        prefix=prefix,
        BOT_POLL_MIN_SECONDS="1",
        BOT_POLL_MAX_SECONDS="3",
        BOT_REPLICA_LEASE_SECONDS="3",
        BOT_WATCH_LEASE_SECONDS="5",
    )
    fleet.start()
    fwd = Forwarder(fleet)
    before = node_commands(ports) if ports else []

    async def tick(r: Run) -> None:
        if kill and r.kill_at is None and fwd.in_flight[0] >= 2 and len(r.first_reply) >= chats // 10:
            r.kill_at = fleet.kill(0)

    try:
        await fleet.ready()
        t0 = time.monotonic()
        result = await drive(telegram, fwd, files, on_tick=tick, timeout=600)
        wall = max(result.finished.values()) - t0
    finally:
        await fwd.aclose()
        fleet.stop()
        after = node_commands(ports) if ports else []
        r, _ = await connect(redis_url)  # its own keys only: removed
        async for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            await r.delete(key)
        await r.aclose()
        breaches = telegram.flood_breaches_by_kind()
        with telegram.lock:
            messages = len(telegram.sends)
        telegram.stop()
        sandbox.stop()
        shutil.rmtree(work, ignore_errors=True)
    first = [result.first_reply[c] - result.doc_at[c] for c in result.first_reply]
    accept = [result.accepted[c] - result.confirm_at[c] for c in result.accepted if c in result.confirm_at]
    bound = messages / 30
    share = [b - a for a, b in zip(before, after, strict=True)]
    return {
        "first_p50": pct(first, 0.5),
        "first_p99": pct(first, 0.99),
        "accept_p50": pct(accept, 0.5),
        "accept_p99": pct(accept, 0.99),
        "jobs_min": chats / wall * 60,
        "messages": messages,
        "bound": bound,
        "ratio": wall / bound,
        "wall": wall,
        "kill_to_last": (max(result.finished.values()) - result.kill_at) if result.kill_at else None,
        "breaches": sum(breaches.values()),
        "nodes": [round(100 * x / sum(share)) for x in share] if share and sum(share) else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chats", type=int, default=60)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--no-cluster", action="store_true", help="skip the Redis Cluster runs")
    args = ap.parse_args()
    plan = [(1, "redis", False), (3, "redis", False), (3, "redis", True)]
    cluster_dir = None
    cluster_url, ports = "", []
    if not args.no_cluster and shutil.which("redis-server"):
        cluster_dir = tempfile.mkdtemp(prefix="bench-cluster-")
        cluster_url = subprocess.run(
            [str(ROOT / "scripts/redis-cluster"), "start", cluster_dir],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        ports = [int(p) for p in Path(cluster_dir, "ports").read_text().split()]
        plan += [(1, "cluster", False), (3, "cluster", False), (3, "cluster", True)]
    print(
        f"{'replicas':>8} {'redis':>8} {'kill':>5} {'doc->1st p50':>12} {'p99':>6} {'confirm->job p50':>16} "
        f"{'p99':>6} {'jobs/min':>9} {'messages':>9} {'bound s':>8} {'wall s':>7} {'wall/bound':>10} "
        f"{'kill->last':>10} {'breaches':>8}  commands per node %"
    )
    try:
        for replicas, backend, kill in plan:
            url = cluster_url if backend == "cluster" else args.redis
            r = asyncio.run(
                run(replicas, url, args.chats, args.rows, kill, ports if backend == "cluster" else [])
            )
            k = f"{r['kill_to_last']:.1f}" if r["kill_to_last"] is not None else "-"
            print(
                f"{replicas:>8} {backend:>8} {'yes' if kill else 'no':>5} {r['first_p50']:>12.2f} "
                f"{r['first_p99']:>6.2f} {r['accept_p50']:>16.2f} {r['accept_p99']:>6.2f} "
                f"{r['jobs_min']:>9.0f} "
                f"{r['messages']:>9} {r['bound']:>8.1f} {r['wall']:>7.1f} {r['ratio']:>10.2f} {k:>10} "
                f"{r['breaches']:>8}  {r['nodes'] or ''}",
                flush=True,
            )
    finally:
        if cluster_dir:
            subprocess.run([str(ROOT / "scripts/redis-cluster"), "stop", cluster_dir], check=False)


if __name__ == "__main__":
    main()
