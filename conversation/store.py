"""Every Redis key of the bot, in one module.

Layout (hash tags keep each group in one Redis Cluster slot):

    bjb:{chat:<id>}:state        JSON ChatState; written under the chat lock
    bjb:{chat:<id>}:lock         per-chat lock: SET NX PX, token-checked release
    bjb:{jobs}:due               ZSET job_id -> next poll time (ms); the watcher's schedule
    bjb:{jobs}:job:<job_id>      HASH chat, owner, intent, msg, status, text, edit_ms,
                                  started_ms, count, polls, summary (claimed|sent), done
    bjb:{intent:<id>}            HASH state PENDING|SUBMITTING|SUBMITTED|REJECTED|UNKNOWN,
                                  job_id, file_id, chat, created_ms
    bjb:{file:<file_id>}:rows    record count of a file this bot uploaded (TTL 30 days)
    bjb:{upd:<update_id>}        update dedupe marker (TTL)
    bjb:{jobs}:finished          HASH status -> count of finished jobs (metrics)
    bjb:{flood}:chat:<id>[:busy], :all  per chat: next allowed send, request in flight;
                                 overall: next start slot (bot/telegram/flood.py)

Redis is the source of truth for everything that must survive a restart.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from conversation.state import ChatState

DUE = "bjb:{jobs}:due"
FINISHED = "bjb:{jobs}:finished"  # HASH status -> jobs finished with it (metrics)
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
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
CLAIM_SUMMARY = """
local v = redis.call('HGET', KEYS[1], 'summary')
if v == 'sent' then return 0 end
if v then
  local ts = tonumber(string.sub(v, 9))
  if ts and tonumber(ARGV[1]) - ts <= tonumber(ARGV[2]) then return -1 end
end
redis.call('HSET', KEYS[1], 'summary', 'claimed:' .. ARGV[1])
return 1
"""
# Intent transition only from an expected state; returns 1 when applied.
INTENT_MOVE = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'job_id', ARGV[3]) end
  return 1
end
return 0
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def chat_key(chat_id: int | str, part: str) -> str:
    return f"bjb:{{chat:{chat_id}}}:{part}"


def job_key(job_id: str) -> str:
    return f"bjb:{{jobs}}:job:{job_id}"


def intent_key(intent_id: str) -> str:
    return f"bjb:{{intent:{intent_id}}}"


class LockTimeout(Exception):
    pass


class Store:
    def __init__(self, redis: Redis, *, pending_ttl_s: int = 3600, lock_ms: int = 5_000) -> None:
        self.r = redis
        self.pending_ttl_s = pending_ttl_s
        self.lock_ms = lock_ms
        self._unlock = redis.register_script(UNLOCK)
        self._claim = redis.register_script(CLAIM)
        self._intent_move = redis.register_script(INTENT_MOVE)
        self._claim_summary = redis.register_script(CLAIM_SUMMARY)

    # --- chats -------------------------------------------------------------------------------

    async def load(self, chat_id: int | str) -> ChatState:
        raw = await self.r.get(chat_key(chat_id, "state"))
        if raw is None:
            return ChatState()
        return ChatState.model_validate_json(raw)

    async def save(self, chat_id: int | str, state: ChatState) -> None:
        # No TTL: the chat keeps its language and jobs; a pending input expires by its own
        # created_ms (checked in step), so an expired file is dropped with a message.
        await self.r.set(chat_key(chat_id, "state"), state.model_dump_json(exclude_defaults=False))

    @asynccontextmanager
    async def chat_lock(self, chat_id: int | str, wait_s: float = 30.0) -> AsyncIterator[None]:
        """One event at a time per chat, across replicas. Token-checked release.

        Held only for load → step → save (milliseconds; effects run outside it), so a short
        TTL is safe and a crashed holder blocks its chat for at most `lock_ms`.
        """
        key = chat_key(chat_id, "lock")
        token = secrets.token_hex(8)
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while not await self.r.set(key, token, nx=True, px=self.lock_ms):
            if time.monotonic() > deadline:
                raise LockTimeout(str(chat_id))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            await self._unlock(keys=[key], args=[token])

    # --- update dedupe -----------------------------------------------------------------------

    async def first_time(self, update_id: int | str, ttl_s: int = 86_400) -> bool:
        """True the first time an update id is seen (SET NX with a TTL)."""
        return bool(await self.r.set(f"bjb:{{upd:{update_id}}}", "1", nx=True, ex=ttl_s))

    async def forget_update(self, update_id: int | str) -> None:
        await self.r.delete(f"bjb:{{upd:{update_id}}}")

    # --- files and intents ----------------------------------------------------------------------

    async def remember_file(self, file_id: str, row_count: int) -> None:
        await self.r.set(f"bjb:{{file:{file_id}}}:rows", row_count, ex=30 * 86_400)

    async def file_rows(self, file_id: str) -> int | None:
        v = await self.r.get(f"bjb:{{file:{file_id}}}:rows")
        return int(v) if v is not None else None

    async def intent_begin(self, intent_id: str, chat_id: int | str, file_id: str) -> bool:
        """Record the intent as SUBMITTING before the POST. False if it exists already."""
        key = intent_key(intent_id)
        created = await self.r.hsetnx(key, "state", "SUBMITTING")
        if created:
            await self.r.hset(key, mapping={"chat": str(chat_id), "file_id": file_id, "created_ms": now_ms()})
            await self.r.expire(key, 30 * 86_400)
        return bool(created)

    async def intent(self, intent_id: str) -> dict[str, str]:
        return await self.r.hgetall(intent_key(intent_id))

    async def intent_move(self, intent_id: str, expected: str, new: str, job_id: str = "") -> bool:
        return bool(await self._intent_move(keys=[intent_key(intent_id)], args=[expected, new, job_id]))

    # --- jobs (watcher) --------------------------------------------------------------------------

    async def add_job(
        self,
        job_id: str,
        chat_id: int | str,
        *,
        owner: int = 0,
        intent: str = "",
        count: int | None = None,
        lang: str = "en",
        msg: int | None = None,
    ) -> None:
        """A job to watch. Record and schedule in one transaction: never one without the other.
        `msg` is the job's progress message, when it was already sent."""
        t = now_ms()
        async with self.r.pipeline(transaction=True) as p:
            p.hsetnx(job_key(job_id), "started_ms", t)
            p.hset(
                job_key(job_id),
                mapping={
                    "chat": str(chat_id),
                    "owner": owner,
                    "intent": intent,
                    "lang": lang,
                    "count": count if count is not None else "",
                    **({"msg": msg} if msg else {}),
                },
            )
            p.zadd(DUE, {job_id: t}, nx=True)
            await p.execute()

    async def claim(self, now: int, lease_ms: int, limit: int) -> list[tuple[str, dict[str, str]]]:
        """Due jobs with their records; each record also carries `due` (its schedule score)."""
        flat = await self._claim(keys=[DUE, "bjb:{jobs}:job:"], args=[now, lease_ms, limit])
        out = []
        for i in range(0, len(flat), 3):
            rec = flat[i + 2]
            fields = {_s(rec[j]): _s(rec[j + 1]) for j in range(0, len(rec), 2)}
            fields["due"] = str(int(float(flat[i + 1])))
            out.append((_s(flat[i]), fields))
        return out

    async def reschedule_many(self, items: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Record and reschedule a whole polled batch in one round trip."""
        if not items:
            return
        async with self.r.pipeline(transaction=False) as p:
            for job_id, _at, fields in items:
                if fields:
                    p.hset(job_key(job_id), mapping=fields)
            p.zadd(DUE, {job_id: at_ms for job_id, at_ms, _ in items}, xx=True)
            await p.execute()

    async def finish_job(self, job_id: str, fields: dict[str, Any]) -> None:
        async with self.r.pipeline(transaction=True) as p:
            p.hset(job_key(job_id), mapping={**fields, "done": "1"})
            p.zrem(DUE, job_id)
            p.expire(job_key(job_id), 30 * 86_400)
            p.hincrby(FINISHED, str(fields.get("status") or "unknown"), 1)
            await p.execute()

    async def finished_counts(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in (await self.r.hgetall(FINISHED)).items()}

    async def claim_summary(self, job_id: str, stale_ms: int = 150_000) -> int:
        """Who sends the terminal summary: 1 = you; 0 = already sent; -1 = being sent now.

        A claim older than `stale_ms` that never became "sent" belonged to a watcher that
        died before sending; it is taken over, so a crash does not lose the summary.
        """
        return int(await self._claim_summary(keys=[job_key(job_id)], args=[now_ms(), stale_ms]))

    async def summary_sent(self, job_id: str) -> None:
        await self.r.hset(job_key(job_id), "summary", "sent")

    async def release_summary(self, job_id: str) -> None:
        """The send failed, or its sender is stopping: let the next poll try again."""
        await self.r.hdel(job_key(job_id), "summary")

    async def job(self, job_id: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self.r.hgetall(job_key(job_id))).items()}

    async def scheduled(self) -> int:
        return int(await self.r.zcard(DUE))

    async def resume(self) -> int:
        """Reschedule every unfinished job record that lost its schedule entry."""
        n = 0
        async for key in self.r.scan_iter(match="bjb:{jobs}:job:*", count=500):
            k = _s(key)
            job_id = k.rsplit(":", 1)[-1]
            if await self.r.hget(k, "done") != b"1" and await self.r.zscore(DUE, job_id) is None:
                await self.r.zadd(DUE, {job_id: now_ms()})
                n += 1
        return n


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def redis_from_url(url: str, max_connections: int = 256, **kw: Any) -> Redis:
    """A client whose pool waits for a free connection under load instead of failing, and
    whose connections retry a command twice on a dropped connection (a restarted server
    leaves every pooled connection stale)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=10,
        socket_timeout=5,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2, (RedisConnectionError, RedisTimeoutError)),
        **kw,
    )
    return Redis(connection_pool=pool)


async def connect(url: str | None) -> tuple[Redis, bool]:
    """(client, persistent). Without a URL: an in-process store that a restart forgets."""
    if url:
        r = redis_from_url(url)
        await r.ping()
        return r, True
    import fakeredis
    from redis.asyncio import BlockingConnectionPool

    return fakeredis.FakeAsyncRedis(
        connection_pool_class=BlockingConnectionPool, max_connections=256, timeout=10
    ), False
