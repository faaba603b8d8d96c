"""Watcher benchmark: 10,000 active jobs, one watcher process, against a real Redis.

Measures, for our watcher (sorted-set schedule, Lua claim, pipelined reschedule):
polls/s, schedule lag p50/p99 (due -> poll), Redis round trips per poll, and CPU seconds
per 1,000 polls; and, in the same run, the baseline of one asyncio task per job sleeping
between polls (no Redis, no restart safety). The service answers from an in-process
httpx.MockTransport (a running job), so both sides pay the same client cost and the
figures are about scheduling. Each side runs in its own process.

Targets: p99 lag <= 1 s at 1,000 polls/s, <= 2 Redis round trips per poll, CPU per poll
no worse than the baseline. Needs Redis (REDIS_URL, default redis://127.0.0.1:6379);
works under a key prefix of its own and removes its keys at the end (nothing is flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

RUNNING = {"job_id": "", "status": "running", "total": 100, "completed": 40, "failed": 1}


def _transport():
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json={**RUNNING, "job_id": job_id})

    return httpx.MockTransport(handler)


class NullChannel:
    async def send_text(self, chat_id, text, buttons=None):
        return 1

    async def edit_text(self, chat_id, message_id, text, buttons=None):
        return None

    async def send_document(self, chat_id, filename, data, caption=None):
        return None

    async def download(self, ref, dest, max_bytes):
        raise NotImplementedError


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run_watcher(jobs: int, interval: float, seconds: float, warmup: float) -> dict:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

    from batchjob.client import BatchJobClient
    from conversation import keys
    from conversation.settings import ConversationSettings
    from conversation.store import Store, now_ms
    from conversation.watcher import Watcher

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    redis = Redis.from_url(url)
    # Its own key prefix on the given Redis: nothing else there is touched; removed at the end.
    k = keys.Keys(prefix=f"bench-{os.getpid()}")
    keys.default = k
    trips = {"n": 0}
    orig_exec = Redis.execute_command
    orig_pipe = Pipeline.execute

    async def counted_exec(self, *a, **k):
        trips["n"] += 1
        return await orig_exec(self, *a, **k)

    async def counted_pipe(self, *a, **k):
        trips["n"] += 1
        return await orig_pipe(self, *a, **k)

    store = Store(redis)
    # Spread the first polls over one interval, as a running system would have them.
    start = now_ms()
    async with redis.pipeline(transaction=False) as p:
        for i in range(jobs):
            due = start + int(i * interval * 1000 / jobs)
            p.hset(
                k.job(f"job{i}"),
                mapping={
                    "chat": "1",
                    "lang": "en",
                    "count": "100",
                    "started_ms": start,
                    "due": due,
                    "text": "",
                    "edit_ms": start,
                },
            )
            p.zadd(k.due(k.shard(f"job{i}")), {f"job{i}": due})
        await p.execute()
    settings = ConversationSettings(
        poll_min_seconds=interval, poll_max_seconds=interval, progress_edit_seconds=3
    )
    client = BatchJobClient("http://svc.bench", "t", transport=_transport())
    watcher = Watcher(store, client, NullChannel(), settings, batch=200, concurrency=200)
    Redis.execute_command = counted_exec  # type: ignore[method-assign]
    Pipeline.execute = counted_pipe  # type: ignore[method-assign]
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(warmup)
    polls0, trips0, cpu0, t0 = watcher.polls, trips["n"], time.process_time(), time.perf_counter()
    watcher.lags_ms.clear()
    await asyncio.sleep(seconds)
    polls, ntrips = watcher.polls - polls0, trips["n"] - trips0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    lags = list(watcher.lags_ms)
    watcher.stop()
    await task
    Redis.execute_command = orig_exec  # type: ignore[method-assign]
    Pipeline.execute = orig_pipe  # type: ignore[method-assign]
    await client.aclose()
    async for key in redis.scan_iter(match=f"{k.prefix}:*", count=1000):
        await redis.delete(key)
    await redis.aclose()
    return {
        "polls_s": polls / wall,
        "p50": pct(lags, 0.5),
        "p99": pct(lags, 0.99),
        "trips_per_poll": ntrips / max(polls, 1),
        "cpu_per_1000": cpu / max(polls, 1) * 1000,
    }


async def run_baseline(jobs: int, interval: float, seconds: float, warmup: float) -> dict:
    from batchjob.client import BatchJobClient
    from conversation import texts

    client = BatchJobClient("http://svc.bench", "t", transport=_transport())
    loop = asyncio.get_running_loop()
    stats = {"polls": 0, "measure": False}
    lags: list[float] = []
    t_start = loop.time()

    async def one(i: int) -> None:
        due = t_start + i * interval / jobs
        await asyncio.sleep(max(0.0, due - loop.time()))
        last = ""
        while True:
            now = loop.time()
            if stats["measure"]:
                lags.append((now - due) * 1000)
            job = await client.get_job(f"job{i}")
            text = texts.progress("en", job, 1.0, 100)
            if text != last:
                last = text
            stats["polls"] += 1
            due = now + interval
            await asyncio.sleep(max(0.0, due - loop.time()))

    tasks = [asyncio.create_task(one(i)) for i in range(jobs)]
    await asyncio.sleep(warmup)
    stats["measure"] = True
    polls0, cpu0, t0 = stats["polls"], time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    polls = stats["polls"] - polls0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()
    return {
        "polls_s": polls / wall,
        "p50": pct(lags, 0.5),
        "p99": pct(lags, 0.99),
        "trips_per_poll": 0.0,
        "cpu_per_1000": cpu / max(polls, 1) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between polls of one job")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time per side")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--side", choices=["watcher", "baseline"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        fn = run_watcher if args.side == "watcher" else run_baseline
        print(json.dumps(asyncio.run(fn(args.jobs, args.interval, args.seconds, args.warmup))))
        return
    results = {}
    for side in ("watcher", "baseline"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--side",
                side,
                "--jobs",
                str(args.jobs),
                "--interval",
                str(args.interval),
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(args.warmup),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.jobs} active jobs, one poll per job every {args.interval:g} s, measured {args.seconds:g} s")
    head = ("side", "polls/s", "lag p50 ms", "lag p99 ms", "RTT/poll", "CPU s/1k polls")
    print(f"{head[0]:<10}{head[1]:>9}{head[2]:>12}{head[3]:>12}{head[4]:>10}{head[5]:>16}")
    for side, r in results.items():
        print(
            f"{side:<10}{r['polls_s']:>9.0f}{r['p50']:>12.0f}{r['p99']:>12.0f}{r['trips_per_poll']:>10.2f}"
            f"{r['cpu_per_1000']:>16.3f}"
        )
    w, b = results["watcher"], results["baseline"]
    print(f"CPU per poll, watcher/baseline: {w['cpu_per_1000'] / b['cpu_per_1000']:.2f}x")


if __name__ == "__main__":
    main()
