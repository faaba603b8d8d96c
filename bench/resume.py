"""Resume benchmark: a restart with 10,000 running jobs and 10,000 finished ones kept.

On start the watcher reschedules every unfinished job whose schedule entry was lost. In the
same run, on the same data, it measures:

- baseline: the earlier resume (scan every job record of every shard, finished ones too,
  then one HGET and one ZSCORE per record, sequentially);
- ours: `Store.resume` (the shards' sets of unfinished jobs, ZMSCORE in batches, the shards
  concurrently; the first start after an upgrade indexes by one pipelined scan, measured
  separately as "first start").

Prints wall time, Redis commands and round trips for each, the ratio, the load average and
the machine. Target: resume of 10,000 jobs <= 1 s, finished jobs not read. Needs Redis
(REDIS_URL, default redis://127.0.0.1:6379); works under a key prefix of its own and removes
its keys at the end (no database is flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from machine import describe  # bench/ is on the path: the scripts run from there

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


async def baseline_resume(store) -> int:  # type: ignore[no-untyped-def]
    """The resume of the release before the sets of unfinished jobs (kept here to compare)."""
    from conversation.store import _s, now_ms

    n = 0
    for shard in range(store.k.shards):
        prefix = store.k.job_prefix(shard)
        async for key in store.r.scan_iter(match=prefix + "*", count=500):
            job_id = _s(key)[len(prefix) :]
            if (
                await store.r.hget(_s(key), "done") != b"1"
                and await store.r.zscore(store.k.due(shard), job_id) is None
            ):
                await store.r.zadd(store.k.due(shard), {job_id: now_ms()})
                n += 1
    return n


async def main(running: int, finished: int, lost: int) -> None:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.client import Pipeline

    from conversation import keys
    from conversation.store import Store

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=64, timeout=30))
    k = keys.Keys(prefix=f"bench-resume-{os.getpid()}")
    keys.default = k
    store = Store(redis, keys=k)
    counts = {"commands": 0, "trips": 0}
    orig_exec, orig_pipe = Redis.execute_command, Pipeline.execute

    async def counted_exec(self, *a, **kw):  # type: ignore[no-untyped-def]
        counts["commands"] += 1
        counts["trips"] += 1
        return await orig_exec(self, *a, **kw)

    async def counted_pipe(self, *a, **kw):  # type: ignore[no-untyped-def]
        counts["commands"] += len(self.command_stack)
        counts["trips"] += 1
        return await orig_pipe(self, *a, **kw)

    try:
        for i in range(0, running + finished, 1000):  # written through the store, as the bot does
            await asyncio.gather(
                *(store.add_job(f"job{j}", 1) for j in range(i, min(i + 1000, running + finished)))
            )
        await asyncio.gather(
            *(store.finish_job(f"job{j}", {"state": "completed"}) for j in range(running, running + finished))
        )

        async def lose() -> None:  # the schedule entries of `lost` running jobs vanish
            async with redis.pipeline(transaction=False) as p:
                for j in range(0, running, max(1, running // lost)):
                    p.zrem(k.due(k.shard(f"job{j}")), f"job{j}")
                await p.execute()

        async def measured(fn) -> tuple[float, int, int, int]:  # type: ignore[no-untyped-def]
            await lose()
            counts.update(commands=0, trips=0)
            Redis.execute_command = counted_exec  # type: ignore[method-assign]
            Pipeline.execute = counted_pipe  # type: ignore[method-assign]
            t0 = time.perf_counter()
            n = await fn()
            wall = time.perf_counter() - t0
            Redis.execute_command, Pipeline.execute = orig_exec, orig_pipe  # type: ignore[method-assign]
            return wall, counts["commands"], counts["trips"], n

        for shard in range(k.shards):  # as the earlier release left it: no index yet
            await redis.delete(k.active(shard), k.indexed(shard))
        base = await measured(lambda: baseline_resume(store))
        first = await measured(store.resume)
        ours = await measured(store.resume)
    finally:
        Redis.execute_command, Pipeline.execute = orig_exec, orig_pipe  # type: ignore[method-assign]
        async for key in redis.scan_iter(match=f"{k.prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()

    print(describe())
    print(f"{running} running jobs ({lost} of them lost their schedule entry), {finished} finished kept")
    print(f"{'':28} {'wall s':>8} {'commands':>9} {'round trips':>12} {'rescheduled':>12}")
    for name, (wall, cmds, trips, n) in (
        ("baseline (scan every record)", base),
        ("first start (index once)", first),
        ("ours (sets of unfinished)", ours),
    ):
        print(f"{name:28} {wall:8.3f} {cmds:9d} {trips:12d} {n:12d}")
    print(
        f"ours / baseline: wall {ours[0] / base[0]:.3f}x, round trips {ours[2] / base[2]:.4f}x; "
        f"target <= 1 s: {'met' if ours[0] <= 1 else 'NOT met'}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--running", type=int, default=10_000)
    ap.add_argument("--finished", type=int, default=10_000)
    ap.add_argument("--lost", type=int, default=100)
    a = ap.parse_args()
    asyncio.run(main(a.running, a.finished, a.lost))
