"""Watcher benchmark: 10,000 active jobs, one watcher process, against a real Redis.

Every job's counts move on every poll (each poll would like an edit: the worst case), each
job is in a chat of its own, and every send goes through the real flood control (30/s
overall, 1/s per chat) to a channel that takes 50-150 ms per call like the Bot API. One job
in a hundred ends once measuring starts, so summaries compete with the edits.

Measures, for our watcher (sorted-set schedule, Lua claim, pipelined reschedule, edits and
summaries off the polls): polls/s, schedule lag p50/p99 (due -> poll), Redis round trips per
poll (the sends' own included), CPU per 1,000 polls, edits/s, summary delay (the poll that
saw the end -> summary sent), and how often a running job's message is refreshed (edits
waiting / edits per second: one pass over the queue). In the same run, the baseline is one
asyncio task per job sleeping between polls and editing inline (its polls wait for its
sends), through the same flood control and channel. The service answers from an in-process
httpx.MockTransport, so both sides pay the same client cost. Each side runs in its own
process. Resume is measured by bench/resume.py.

Targets: p99 lag <= 1 s at 1,000 polls/s; summaries within 2 s; each running job refreshed
at least every max(10 s, jobs / spare budget). Needs Redis (REDIS_URL, default
redis://127.0.0.1:6379); works under a key prefix of its own and removes its keys at the end
(nothing is flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time

from machine import describe  # bench/ is on the path: the scripts run from there

ENDING = {"at": float("inf")}  # from then on, one job in a hundred has ended


def _transport():
    import httpx

    polls: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        job_id = request.url.path.rsplit("/", 1)[-1]
        n = polls[job_id] = polls.get(job_id, 0) + 1
        if int(job_id[3:]) % 100 == 0 and time.monotonic() >= ENDING["at"]:
            return httpx.Response(
                200,
                json={"job_id": job_id, "status": "completed", "total": 100, "completed": 100, "failed": 0},
            )
        body = {"job_id": job_id, "status": "running", "total": 100_000, "completed": n, "failed": 0}
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


class SlowChannel:
    """Every send through the flood control; each call takes 50-150 ms, like the Bot API."""

    def __init__(self, flood) -> None:  # type: ignore[no-untyped-def]
        self.flood = flood
        self.edits = 0
        self.summaries: dict[str, float] = {}  # job id -> when its summary returned

    async def _call(self) -> None:
        from conversation.channel import pass_gate

        await pass_gate()
        await asyncio.sleep(random.uniform(0.05, 0.15))

    async def send_text(self, chat_id, text, buttons=None):  # type: ignore[no-untyped-def]
        await self.flood.send(chat_id, self._call)
        if " finished" in text:
            self.summaries[text.split()[1]] = time.monotonic()
        return 1

    async def edit_text(self, chat_id, message_id, text, buttons=None):  # type: ignore[no-untyped-def]
        await self.flood.send(chat_id, self._call)
        self.edits += 1

    async def send_document(self, chat_id, filename, data, caption=None):  # type: ignore[no-untyped-def]
        return None

    async def download(self, ref, dest, max_bytes):  # type: ignore[no-untyped-def]
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
    from bot.flood import FloodControl
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
            job = f"job{i}"
            p.hset(
                k.job(job),
                mapping={
                    "chat": str(i + 1),
                    "lang": "en",
                    "count": "100000",
                    "started_ms": start,
                    "msg": "1",
                },
            )
            p.zadd(k.due(k.shard(job)), {job: due})
            p.sadd(k.active(k.shard(job)), job)
        await p.execute()
    # Production settings but the poll interval (fixed here: 10,000 jobs at 1,000 polls/s).
    settings = ConversationSettings(poll_min_seconds=interval, poll_max_seconds=interval)
    client = BatchJobClient("http://svc.bench", "t", transport=_transport())
    channel = SlowChannel(FloodControl(redis, keys=k))
    watcher = Watcher(store, client, channel, settings)
    seen_end: dict[str, float] = {}
    terminal = watcher._terminal  # where a watcher takes up a job that ended

    async def noted(chat, lang, job, *rest):  # type: ignore[no-untyped-def]
        seen_end.setdefault(job.job_id, time.monotonic())
        return await terminal(chat, lang, job, *rest)

    watcher._terminal = noted  # type: ignore[method-assign]
    Redis.execute_command = counted_exec  # type: ignore[method-assign]
    Pipeline.execute = counted_pipe  # type: ignore[method-assign]
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(warmup)
    ENDING["at"] = time.monotonic()
    polls0, trips0, edits0 = watcher.polls, trips["n"], channel.edits
    cpu0, t0 = time.process_time(), time.perf_counter()
    watcher.lags_ms.clear()
    await asyncio.sleep(seconds)
    polls, ntrips, edits = watcher.polls - polls0, trips["n"] - trips0, channel.edits - edits0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    lags = list(watcher.lags_ms)
    edits_queue = getattr(watcher, "edits", None)  # an earlier watcher edited inline
    waiting = len(edits_queue.waiting) if edits_queue is not None else 0
    watcher.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    Redis.execute_command = orig_exec  # type: ignore[method-assign]
    Pipeline.execute = orig_pipe  # type: ignore[method-assign]
    await client.aclose()
    async for key in redis.scan_iter(match=f"{k.prefix}:*", count=1000):
        await redis.delete(key)
    await redis.aclose()
    delays = [channel.summaries[j] - t for j, t in seen_end.items() if j in channel.summaries]
    return {
        "polls_s": polls / wall,
        "p50": pct(lags, 0.5),
        "p99": pct(lags, 0.99),
        "trips_per_poll": ntrips / max(polls, 1),
        "cpu_per_1000": cpu / max(polls, 1) * 1000,
        "edits_s": edits / wall,
        "refresh_s": waiting / max(edits / wall, 1e-9),
        "summaries": f"{len(delays)}/{len(seen_end)}",
        "summary_p50": pct(delays, 0.5),
        "summary_max": max(delays, default=float("nan")),
    }


async def run_baseline(jobs: int, interval: float, seconds: float, warmup: float) -> dict:
    from redis.asyncio import Redis

    from batchjob.client import BatchJobClient
    from bot.flood import FloodControl
    from conversation import keys, texts

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    redis = Redis.from_url(url)
    k = keys.Keys(prefix=f"bench-{os.getpid()}")
    channel = SlowChannel(FloodControl(redis, keys=k))
    client = BatchJobClient("http://svc.bench", "t", transport=_transport())
    loop = asyncio.get_running_loop()
    stats = {"polls": 0, "measure": False, "stop": False}
    lags: list[float] = []
    seen_end: dict[str, float] = {}
    t_start = loop.time()

    async def one(i: int) -> None:
        due = t_start + i * interval / jobs
        await asyncio.sleep(max(0.0, due - loop.time()))
        last, last_edit = "", 0.0
        while not stats["stop"]:
            now = loop.time()
            if stats["measure"]:
                lags.append((now - due) * 1000)
            job = await client.get_job(f"job{i}")
            stats["polls"] += 1
            if job.terminal:
                seen_end.setdefault(job.job_id, time.monotonic())
                await channel.send_text(i + 1, f"Job {job.job_id} finished")
                return
            text = texts.progress("en", job, 1.0, 100_000)
            if text != last and loop.time() - last_edit >= 3:
                await channel.edit_text(i + 1, 1, text)  # the poll waits for its edit
                last, last_edit = text, loop.time()
            due = now + interval
            await asyncio.sleep(max(0.0, due - loop.time()))

    tasks = [asyncio.create_task(one(i)) for i in range(jobs)]
    await asyncio.sleep(warmup)
    ENDING["at"] = time.monotonic()
    stats["measure"] = True
    polls0, edits0, cpu0, t0 = stats["polls"], channel.edits, time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    polls, edits = stats["polls"] - polls0, channel.edits - edits0
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    stats["stop"] = True  # each task ends after its current poll; the stragglers are cancelled
    _, late = await asyncio.wait(tasks, timeout=30)
    for t in late:
        t.cancel()
    await asyncio.wait(late, timeout=10)
    await client.aclose()
    async for key in redis.scan_iter(match=f"{k.prefix}:*", count=1000):
        await redis.delete(key)
    await redis.aclose()
    delays = [channel.summaries[j] - t for j, t in seen_end.items() if j in channel.summaries]
    return {
        "polls_s": polls / wall,
        "p50": pct(lags, 0.5),
        "p99": pct(lags, 0.99),
        "trips_per_poll": float("nan"),
        "cpu_per_1000": cpu / max(polls, 1) * 1000,
        "edits_s": edits / wall,
        "refresh_s": float("nan"),
        "summaries": f"{len(delays)}/{len(seen_end)}",
        "summary_p50": pct(delays, 0.5),
        "summary_max": max(delays, default=float("nan")),
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
    print(describe())
    print(
        f"{args.jobs} active jobs, one poll per job every {args.interval:g} s, measured {args.seconds:g} s; "
        "real flood control, 50-150 ms per send"
    )
    cols = (
        ("side", "<10"),
        ("polls/s", ">9"),
        ("lag p50 ms", ">11"),
        ("lag p99 ms", ">11"),
        ("RTT/poll", ">9"),
        ("CPU s/1k", ">9"),
        ("edits/s", ">8"),
        ("refresh s", ">10"),
        ("summaries", ">10"),
        ("sum p50 s", ">10"),
        ("sum max s", ">10"),
    )
    print("".join(f"{h:{f}}" for h, f in cols))
    for side, r in results.items():
        print(
            f"{side:<10}{r['polls_s']:>9.0f}{r['p50']:>11.0f}{r['p99']:>11.0f}{r['trips_per_poll']:>9.2f}"
            f"{r['cpu_per_1000']:>9.3f}{r['edits_s']:>8.1f}{r['refresh_s']:>10.0f}{r['summaries']:>10}"
            f"{r['summary_p50']:>10.2f}{r['summary_max']:>10.2f}"
        )
    w, b = results["watcher"], results["baseline"]
    target_refresh = max(10.0, args.jobs / max(w["edits_s"], 1e-9))
    print(
        f"watcher/baseline: polls/s {w['polls_s'] / b['polls_s']:.2f}x, lag p99 {w['p99'] / b['p99']:.3f}x; "
        f"targets: lag p99 <= 1000 ms {'met' if w['p99'] <= 1000 else 'NOT met'}, "
        f"summaries <= 2 s {'met' if w['summary_max'] <= 2 else 'NOT met'}, "
        f"refresh <= max(10 s, jobs / edits per s) = {target_refresh:.0f} s "
        f"{'met' if w['refresh_s'] <= target_refresh else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
