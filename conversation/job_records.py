"""Watched jobs in Redis: their records, the schedule the watcher claims from, the
summary marker that makes a summary go out once, and resuming after a restart.

A mixin of `conversation.store.Store` (which holds the client `r`, the key names `k` and
`cluster`); split out so each module keeps to one concern.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from conversation.identity import qualify

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from conversation.keys import Keys

# Claim up to ARGV[3] due jobs: re-score them to now + lease (so a crashed watcher's jobs
# become due again) and return each id with its record, in one round trip.
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
  out[#out + 1] = id
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGETALL', KEYS[2] .. id)
end
return out
"""
# The summary marker: claimed:<ms> (to be sent), begun:<ms> (its request left), sent.
CLAIM_SUMMARY = """
local v = redis.call('HGET', KEYS[1], 'summary')
if v == 'sent' then return 0 end
if v then
  local kind, ts = string.match(v, '^(%a+):(%d+)$')
  local fresh = ts and tonumber(ARGV[1]) - tonumber(ts) <= tonumber(ARGV[2])
  if fresh then return -1 end
  if kind == 'begun' then return 0 end
end
redis.call('HSET', KEYS[1], 'summary', 'claimed:' .. ARGV[1])
return 1
"""
BEGIN_SUMMARY = """
if redis.call('HGET', KEYS[1], 'summary') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'summary', 'begun:' .. ARGV[2])
return 1
"""
# Fields of a job record that still exists (a late write must not leave a stray hash).
RECORD_IF_KEPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


async def pipelined(redis: Any, fill: Callable[[Any], None], *scripts: str) -> list[Any]:
    """Run the commands `fill` puts in a pipeline (not a transaction) in one round trip and
    return their answers, raising the first error. Scripts go in as plain EVALSHA: a
    pipeline given a Script object asks SCRIPT EXISTS first, a second round trip each
    time. A server without them (restarted, flushed) gets `scripts` loaded, and the whole
    pipeline one retry: its commands must be safe to repeat."""
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as p:
            fill(p)
            answers = await p.execute(raise_on_error=False)
        if attempt or not any(isinstance(a, NoScriptError) for a in answers):
            break
        for script in scripts:
            await redis.script_load(script)
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer
    return answers


def now_ms() -> int:
    return int(time.time() * 1000)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class JobRecords:
    r: Any
    k: Keys
    cluster: bool

    def _init_jobs(self, redis: Redis) -> None:
        self.job_added = asyncio.Event()  # set by add_job: this process's watcher wakes at once
        self._claim = redis.register_script(CLAIM)
        self._claim_summary = redis.register_script(CLAIM_SUMMARY)
        self._begin_summary = redis.register_script(BEGIN_SUMMARY)
        self._record_if_kept = redis.register_script(RECORD_IF_KEPT)

    async def add_job(
        self,
        job_id: str,
        chat_id: int | str,
        *,
        owner: str = "",
        intent: str = "",
        count: int | None = None,
        lang: str = "en",
        msg: int | str | None = None,
        rows: str = "",
        cost: str = "",
        currency: str = "",
        source: str = "",
        reservation: str = "",
    ) -> None:
        """A job to watch. Record and schedule in one transaction (one slot): never one
        without the other. `msg` is the job's progress message, when it was already sent;
        `reservation`, its budget reservation's record (`Budgets.taken`)."""
        t = now_ms()
        key = self.k.job(job_id)
        async with self.r.pipeline(transaction=True) as p:
            p.hsetnx(key, "started_ms", t)
            p.hset(
                key,
                mapping={
                    "chat": qualify(chat_id),
                    "owner": owner,
                    "intent": intent,
                    "lang": lang,
                    "count": count if count is not None else "",
                    **({"msg": msg} if msg else {}),
                    **({"rows": rows} if rows else {}),
                    **({"res": reservation} if reservation else {}),
                    **({"cost": cost, "currency": currency} if cost else {}),
                    **({"src": source} if source else {}),
                },
            )
            p.zadd(self.k.due(self.k.shard(job_id)), {job_id: t}, nx=True)
            p.sadd(self.k.active(self.k.shard(job_id)), job_id)
            await p.execute()
        self.job_added.set()

    async def claim(self, now: int, lease_ms: int, limit: int) -> list[tuple[str, dict[str, str]]]:
        """Due jobs with their records, from every shard (one pipeline: one round trip per
        node); each record also carries `due` (its schedule score)."""
        per = max(1, -(-limit // self.k.shards))

        def keys(shard: int) -> list[str]:
            return [self.k.due(shard), self.k.job_prefix(shard)]

        if self.cluster:
            # A cluster pipeline refuses EVALSHA: the shards' calls go concurrently instead.
            answers = await asyncio.gather(
                *(self._claim(keys=keys(sh), args=[now, lease_ms, per]) for sh in range(self.k.shards))
            )
        else:
            answers = await self._claim_shards(keys, [now, lease_ms, per])
        out = []
        for flat in answers:
            for i in range(0, len(flat), 3):
                rec = flat[i + 2]
                fields = {_s(rec[j]): _s(rec[j + 1]) for j in range(0, len(rec), 2)}
                fields["due"] = str(int(float(flat[i + 1])))
                out.append((_s(flat[i]), fields))
        return out

    async def _claim_shards(self, keys: Callable[[int], list[str]], args: list[int]) -> list[Any]:
        def fill(p: Any) -> None:
            for shard in range(self.k.shards):
                p.evalsha(self._claim.sha, 2, *keys(shard), *args)

        return await pipelined(self.r, fill, CLAIM)

    async def reschedule_many(self, items: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Record and reschedule a whole polled batch in one pipeline."""
        if not items:
            return
        by_shard: dict[int, dict[str, int]] = {}
        async with self.r.pipeline(transaction=False) as p:
            for job_id, at_ms, fields in items:
                if fields:
                    p.hset(self.k.job(job_id), mapping=fields)
                by_shard.setdefault(self.k.shard(job_id), {})[job_id] = at_ms
            for shard, scores in by_shard.items():
                p.zadd(self.k.due(shard), scores, xx=True)
            await p.execute()

    async def finish_job(self, job_id: str, fields: dict[str, Any]) -> None:
        shard = self.k.shard(job_id)
        async with self.r.pipeline(transaction=True) as p:
            p.hset(self.k.job(job_id), mapping={**fields, "done": "1"})
            p.zrem(self.k.due(shard), job_id)
            p.srem(self.k.active(shard), job_id)
            p.expire(self.k.job(job_id), 30 * 86_400)
            # Metrics by our state (the service's own words vary by service).
            p.hincrby(
                self.k.finished(shard), str(fields.get("state") or fields.get("status") or "unknown"), 1
            )
            await p.execute()

    async def job_done(self, job_id: str) -> bool:
        return _s(await self.r.hget(self.k.job(job_id), "done") or "") == "1"

    async def record_job(self, job_id: str, fields: dict[str, Any]) -> None:
        """Set fields of a job's record, if it is still kept."""
        args = [str(x) for kv in fields.items() for x in kv]
        await self._record_if_kept(keys=[self.k.job(job_id)], args=args)

    async def finished_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for shard in range(self.k.shards):
            for k, v in (await self.r.hgetall(self.k.finished(shard))).items():
                total[_s(k)] = total.get(_s(k), 0) + int(v)
        return total

    async def claim_summary(self, job_id: str, stale_ms: int = 150_000, now: int | None = None) -> int:
        """Who sends the terminal summary: 1 = you (claimed at `now`); 0 = sent, or its send
        began and its sender died (it may have arrived: not sent again); -1 = being sent now.

        A claim older than `stale_ms` whose request never left belonged to a watcher that
        died before sending; it is taken over, so a crash does not lose the summary.
        """
        at = now if now is not None else now_ms()
        return int(await self._claim_summary(keys=[self.k.job(job_id)], args=[at, stale_ms]))

    async def begin_summary(self, job_id: str, claimed_at: int) -> bool:
        """The summary's request leaves now; False if the claim was taken over meanwhile."""
        return bool(
            await self._begin_summary(keys=[self.k.job(job_id)], args=[f"claimed:{claimed_at}", now_ms()])
        )

    async def release_summary(self, job_id: str) -> None:
        """The send failed, or its sender is stopping: let the next poll try again."""
        await self.r.hdel(self.k.job(job_id), "summary")

    async def jobs_meta(self, job_ids: list[str]) -> list[dict[str, str]]:
        """What this bot recorded of each job (cost, rows…); {} for a job it never watched."""
        if not job_ids:
            return []
        async with self.r.pipeline(transaction=False) as p:
            for job_id in job_ids:
                p.hgetall(self.k.job(job_id))
            found = await p.execute()
        return [{_s(k): _s(v) for k, v in (h or {}).items()} for h in found]

    async def job(self, job_id: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self.r.hgetall(self.k.job(job_id))).items()}

    async def next_due(self) -> int | None:
        """The earliest scheduled poll (ms) over every shard, or None when none is scheduled:
        one pipeline of one read per shard."""
        async with self.r.pipeline(transaction=False) as p:
            for shard in range(self.k.shards):
                p.zrange(self.k.due(shard), 0, 0, withscores=True)
            firsts = await p.execute()
        scores = [int(first[0][1]) for first in firsts if first]
        return min(scores) if scores else None

    async def scheduled(self) -> int:
        async with self.r.pipeline(transaction=False) as p:
            for shard in range(self.k.shards):
                p.zcard(self.k.due(shard))
            return sum(int(n) for n in await p.execute())

    async def resume(self) -> int:
        """Reschedule every unfinished job that lost its schedule entry. Reads the shards'
        sets of unfinished jobs, a few round trips per shard whatever the number of jobs;
        finished jobs are not read."""
        n = await self.adopt_legacy()
        found = await asyncio.gather(*map(self._resume_shard, range(self.k.shards)))
        return n + sum(found)

    async def _resume_shard(self, shard: int) -> int:
        if not await self.r.exists(self.k.indexed(shard)):
            await self._index_shard(shard)
        active = [_s(j) for j in await self.r.smembers(self.k.active(shard))]
        lost: dict[str, int] = {}
        t = now_ms()
        for i in range(0, len(active), RESUME_BATCH):
            batch = active[i : i + RESUME_BATCH]
            scores = await self.r.zmscore(self.k.due(shard), batch)
            lost.update({job_id: t for job_id, score in zip(batch, scores, strict=True) if score is None})
        if lost:
            await self.r.zadd(self.k.due(shard), lost, nx=True)
        return len(lost)

    async def _index_shard(self, shard: int) -> None:
        """Once per deployment: put the shard's unfinished jobs of state written before the
        `active` sets existed into its set (a scan of its job records, pipelined)."""
        prefix = self.k.job_prefix(shard)
        async for keys in _batches(self.r.scan_iter(match=prefix + "*", count=1000), RESUME_BATCH):
            async with self.r.pipeline(transaction=False) as p:
                for key in keys:
                    p.hget(key, "done")
                done = await p.execute()
            unfinished = [_s(k)[len(prefix) :] for k, d in zip(keys, done, strict=True) if d != b"1"]
            if unfinished:
                await self.r.sadd(self.k.active(shard), *unfinished)
        await self.r.set(self.k.indexed(shard), "1")

    async def adopt_legacy(self) -> int:
        """Move watched jobs of the single-shard layout (`<prefix>:{jobs}:…`, before the
        schedule was sharded) into their shards, so an upgrade loses no job."""
        legacy = f"{self.k.prefix}:{{jobs}}:job:"
        moved = 0
        async for key in self.r.scan_iter(match=legacy + "*", count=500):
            job_id = _s(key)[len(legacy) :]
            rec = await self.r.hgetall(_s(key))
            if rec:
                await self.r.hset(self.k.job(job_id), mapping=rec)
                if rec.get(b"done") != b"1":
                    await self.r.zadd(self.k.due(self.k.shard(job_id)), {job_id: now_ms()})
                    await self.r.sadd(self.k.active(self.k.shard(job_id)), job_id)
                    moved += 1
            await self.r.delete(_s(key))
        await self.r.delete(f"{self.k.prefix}:{{jobs}}:due")
        return moved


RESUME_BATCH = 1000  # job ids per command when resuming


async def _batches(items: AsyncIterator[Any], size: int) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    async for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
