"""The bot's state in Redis: chats, the outbox, files and intents; watched jobs through
`conversation.job_records` (a mixin of `Store`).

Key names are built in `conversation.keys` (their layout is documented there). Redis is the
source of truth for everything that must survive a restart or move to another replica.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

from redis.asyncio import BlockingConnectionPool, Redis

from conversation.autopipeline import later
from conversation.job_records import JobRecords, _s, now_ms
from conversation.keys import Keys
from conversation.keys import current as current_keys
from conversation.state import ChatState

UPDATE_DONE_TTL_S = 86_400  # a delivered update is known as done this long

# Move an intent from one state to the next, only from the state expected.
INTENT_MOVE = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', ARGV[2])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'job_id', ARGV[3]) end
  return 1
end
return 0
"""


# The state and its outbox entries (ARGV[2..] as seq, effect pairs) in one step.
SAVE = """
redis.call('SET', KEYS[1], ARGV[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""
# The same, only if the state (KEYS[1]) is still the one the step was taken from (ARGV[1];
# '' for none) and no per-chat lock (KEYS[3]) of a release before this scheme is held (a
# rolling upgrade): {1} written, {0, state} changed meanwhile ({0}: gone), {-1} locked.
# The whole state is compared, not a version: a replica of that release bumps none. With
# ARGV[3] (seconds), the update whose event this step applies (KEYS[4]) is marked done too.
# ARGV[4] outbox entries performed meanwhile follow it, to remove; then the new ones.
SAVE_IF = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1} end
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[1] then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[4], 'done', 'EX', tonumber(ARGV[3])) end
local first = 5 + tonumber(ARGV[4])
for i = 5, first - 1 do redis.call('HDEL', KEYS[2], ARGV[i]) end
for i = first, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return {1}
"""
# An intent recorded once (0 when it exists), its fields and expiry with it.
INTENT_BEGIN = """
if redis.call('HSETNX', KEYS[1], 'state', 'SUBMITTING') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'chat', ARGV[1], 'file_id', ARGV[2], 'created_ms', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""


BEGUN = "begun:"  # an outbox entry being performed (its outcome unknown if its performer dies)
BEGIN = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v or string.sub(v, 1, #ARGV[2]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. v)
return 1
"""


class LockTimeout(Exception):
    """A chat stayed locked (by a replica of an earlier release) past the wait."""


class Snapshot(NamedTuple):
    """A chat's state as stored (None: none yet): what a save compares with."""

    raw: bytes | None

    def state(self) -> ChatState:
        return ChatState() if self.raw is None else ChatState.model_validate_json(self.raw)


# A save step: the state to write and its outbox entries, or None when nothing changed.
Change = Callable[[ChatState], "tuple[ChatState, dict[int, str]] | None"]

SEEN_KEPT = 2048  # chats whose last known state a store keeps (a stale one costs a round trip)


class Store(JobRecords):
    def __init__(
        self,
        redis: Redis,
        *,
        keys: Keys | None = None,
        pending_ttl_s: int = 3600,
    ) -> None:
        self.r = redis
        self.k = keys or current_keys()
        self.cluster = is_cluster_client(redis)
        self.pending_ttl_s = pending_ttl_s
        self._seen: OrderedDict[str, Snapshot] = OrderedDict()
        self._init_jobs(redis)
        self._intent_move = redis.register_script(INTENT_MOVE)
        self._save = redis.register_script(SAVE)
        self._begin = redis.register_script(BEGIN)
        self._save_if = redis.register_script(SAVE_IF)
        self._intent_begin = redis.register_script(INTENT_BEGIN)

    # --- chats -------------------------------------------------------------------------------

    async def load(self, chat_id: int | str) -> ChatState:
        raw = await self.r.get(self.k.chat(chat_id, "state"))
        if raw is None:
            return ChatState()
        return ChatState.model_validate_json(raw)

    async def save(self, chat_id: int | str, state: ChatState, outbox: dict[int, str] | None = None) -> None:
        """Write the state and its outbox entries whatever is stored (`change` is the safe
        way when others may write the chat too).

        No TTL on the state: the chat keeps its language and jobs; a pending input expires by
        its own created_ms (checked in step), so an expired file is dropped with a message.
        """
        raw = state.model_dump_json().encode()
        flat: list[str | int | bytes] = [raw]
        for seq, entry in (outbox or {}).items():
            flat += [seq, entry]
        await self._save(keys=[self.k.chat(chat_id, "state"), self.k.chat(chat_id, "out")], args=flat)
        self._remember(chat_id, Snapshot(raw))

    async def outbox(self, chat_id: int | str) -> list[tuple[int, str]]:
        """Effects recorded and not done, oldest first; one begun shows as `BEGUN` + entry."""
        raw = await self.r.hgetall(self.k.chat(chat_id, "out"))
        return sorted((int(_s(k)), _s(v)) for k, v in raw.items())

    async def begin(self, chat_id: int | str, seq: int) -> bool:
        """Mark an outbox entry begun, to perform it now. Only one performer wins, and a begun
        entry is never performed again (a send cut short may have arrived)."""
        return bool(await self._begin(keys=[self.k.chat(chat_id, "out")], args=[seq, BEGUN]))

    async def done(self, chat_id: int | str, *seqs: int) -> None:
        await self.r.hdel(self.k.chat(chat_id, "out"), *seqs)

    async def chat_ids(self) -> AsyncIterator[str]:
        async for key in self.r.scan_iter(match=self.k.chat_pattern(), count=500):
            yield self.k.chat_of(_s(key))

    # --- changing a chat's state: compare and set ----------------------------------------------

    def _remember(self, chat_id: int | str, snap: Snapshot) -> None:
        key = str(chat_id)
        self._seen[key] = snap
        self._seen.move_to_end(key)
        if len(self._seen) > SEEN_KEPT:
            self._seen.popitem(last=False)

    async def snapshot(self, chat_id: int | str) -> Snapshot:
        """The chat's state as this store last saw it, or as read now. It may be stale: a
        save compares it with what is stored, and steps again from that when they differ."""
        seen = self._seen.get(str(chat_id))
        if seen is not None:
            return seen
        snap = Snapshot(await self.r.get(self.k.chat(chat_id, "state")))
        self._remember(chat_id, snap)
        return snap

    async def save_if(
        self,
        chat_id: int | str,
        base: Snapshot,
        state: ChatState,
        outbox: dict[int, str] | None = None,
        done: str | None = None,
        performed: list[int] | None = None,
    ) -> Snapshot | None:
        """Write the state (and its outbox entries) if the chat's stored state is still
        `base`: None when written, else what is stored now (to step from again). `done`: an
        update's lease key in the chat's slot, marked done in the same write; `performed`:
        outbox entries done since, removed in it (emptied once they are)."""
        keys = [self.k.chat(chat_id, "state"), self.k.chat(chat_id, "out"), self.k.chat(chat_id, "lock")]
        if done:
            keys.append(done)
        raw = state.model_dump_json().encode()
        gone = list(performed or ())
        flat: list[str | int | bytes] = [base.raw or b"", raw, UPDATE_DONE_TTL_S if done else "", len(gone)]
        flat += gone
        for seq, entry in (outbox or {}).items():
            flat += [seq, entry]
        got = await self._save_if(keys=keys, args=flat)
        if int(got[0]) == 1:
            self._remember(chat_id, Snapshot(raw))
            if performed:
                del performed[: len(gone)]
            return None
        if int(got[0]) == -1:
            return base  # the same base: the caller waits for the lock, then tries again
        now = Snapshot(got[1] if len(got) > 1 else None)  # Lua ends a table at its first nil
        self._remember(chat_id, now)
        return now

    async def change(
        self,
        chat_id: int | str,
        step: Change,
        wait_s: float = 30.0,
        done: str | None = None,
        performed: list[int] | None = None,
    ) -> ChatState:
        """Apply `step` to the chat's state and save it, one change at a time per chat across
        replicas without a lock: a save finds the state another change wrote meanwhile and
        `step` runs again on that. `step` must be pure (it may run more than once). Returns
        the state saved (or found, when `step` changed nothing). A chat this store has not
        seen costs no read: guessed new, the save checks it. `done`, `performed`: as in
        `save_if` (left as they are when nothing is saved). Raises LockTimeout while a lock of an earlier
        release holds the chat past `wait_s`."""
        # A chat this store has not seen is guessed new, not read: the save checks the guess
        # (and answers with the stored state when it is wrong, as a read would have).
        seen = self._seen.get(str(chat_id))
        guessed = seen is None
        snap = seen or Snapshot(None)
        deadline, delay = time.monotonic() + wait_s, 0.005
        while True:
            state = snap.state()
            stepped = step(state)
            if stepped is None:
                if guessed:  # nothing to save on a guess proves nothing: read, step again
                    snap, guessed = await self.snapshot(chat_id), False
                    continue
                return state
            new, entries = stepped
            now = await self.save_if(chat_id, snap, new, entries, done, performed)
            guessed = False
            if now is None:
                return new
            if now is snap:  # locked by an earlier release's replica: wait for it
                if time.monotonic() > deadline:
                    raise LockTimeout(str(chat_id))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
            snap = now

    # --- files and intents ----------------------------------------------------------------------

    async def remember_file(self, file_id: str, row_count: int) -> None:
        # A cache (a file_id given again skips counting its rows): rides with the next round trip.
        await later(self.r).set(self.k.file_rows(file_id), row_count, ex=30 * 86_400)

    async def file_rows(self, file_id: str) -> int | None:
        v = await self.r.get(self.k.file_rows(file_id))
        return int(v) if v is not None else None

    async def intent_begin(self, intent_id: str, chat_id: int | str, file_id: str) -> bool:
        """Record the intent as SUBMITTING before the POST. False if it exists already."""
        args = [str(chat_id), file_id, now_ms(), 30 * 86_400]
        return bool(await self._intent_begin(keys=[self.k.intent(intent_id)], args=args))

    async def intent(self, intent_id: str) -> dict[bytes, bytes]:
        return await self.r.hgetall(self.k.intent(intent_id))

    async def intent_move(self, intent_id: str, expected: str, new: str, job_id: str = "") -> bool:
        return bool(await self._intent_move(keys=[self.k.intent(intent_id)], args=[expected, new, job_id]))

    # --- jobs (watcher) --------------------------------------------------------------------------


def is_cluster_client(redis: Any) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(redis, RedisCluster)


def _pool_options() -> dict[str, Any]:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return {
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 2, (RedisConnectionError, RedisTimeoutError)),
    }


def redis_from_url(url: str, max_connections: int = 256, **kw: Any) -> Redis:
    """A client whose pool waits for a free connection under load instead of failing, whose
    connections retry a command twice on a dropped connection (a restarted server leaves
    every pooled connection stale), and whose concurrent commands share round trips
    (`conversation.autopipeline`)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=10, **_pool_options(), **kw
    )
    from conversation.autopipeline import AutoPipelineRedis

    return AutoPipelineRedis(connection_pool=pool)


def cluster_from_url(url: str, max_connections: int = 256) -> Any:
    """A Redis Cluster client from the URL of any one node: it discovers the others and
    follows MOVED/ASK redirections."""
    from redis.asyncio.cluster import RedisCluster

    from conversation.autopipeline import RemembersScripts

    class Cluster(RemembersScripts, RedisCluster):
        pass

    return Cluster.from_url(url, max_connections=max_connections, **_pool_options())


async def load_scripts(redis: Any) -> int:
    """Load every script registered on the client (on every primary of a cluster), in one
    round trip where the client shares them: a burst on a fresh or restarted server then
    finds them there. How many there were."""
    sources = list(getattr(redis, "registered_scripts", {}).values())
    await asyncio.gather(*(redis.script_load(s) for s in sources))
    return len(sources)


WARM_CONNECTIONS = 24  # what a 200-chat burst had open in its first second (bench/e2e)


async def open_connections(redis: Any, n: int = WARM_CONNECTIONS) -> int:
    """Open `n` of the pool's connections now and keep them pooled: a cold burst set up 16
    at once 0.4-0.5 s in (a connect and two round trips each, on the loop while the first
    answers were due). A cluster client's node pools fill with its first commands: 0."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None:
        return 0
    got = await asyncio.gather(*(pool.get_connection() for _ in range(n)), return_exceptions=True)
    held = [c for c in got if not isinstance(c, BaseException)]
    for c in held:
        await pool.release(c)
    failed = next((e for e in got if isinstance(e, BaseException)), None)
    if failed is not None:
        raise failed
    return len(held)


async def is_cluster(url: str) -> bool:
    """REDIS_CLUSTER=1/0 decides; otherwise ask the node (`cluster_enabled:1`)."""
    forced = os.environ.get("REDIS_CLUSTER", "").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    probe = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        info = await probe.info("cluster")
        return str(info.get("cluster_enabled", 0)) == "1"
    finally:
        await probe.aclose()


async def connect(url: str | None) -> tuple[Any, bool]:
    """(client, persistent). Without a URL: an in-process store that a restart forgets.
    A URL naming a node of a Redis Cluster gives a cluster client."""
    if url:
        r = cluster_from_url(url) if await is_cluster(url) else redis_from_url(url)
        await r.ping()
        return r, True
    return in_process_redis(), False


def in_process_redis() -> Redis:
    """A store in this process (fakeredis), with the same shared round trips and a pool that
    waits for a free connection, like the real one."""
    import fakeredis

    from conversation.autopipeline import AutoPipelining

    class InProcessRedis(AutoPipelining, fakeredis.FakeAsyncRedis):
        pass

    return InProcessRedis(connection_pool_class=BlockingConnectionPool, max_connections=256, timeout=10)
