"""Who is doing what, across replicas: update leases, replica heartbeats, work in flight.

- An update (a Telegram update id, later any channel's event id) is *leased* by the replica
  that handles it ("run:<replica>", expiring) and becomes "done" once its event is applied
  to the chat's state (whose outbox and phase carry everything still to do). A redelivery
  finds "done" (a duplicate), a live lease (in progress elsewhere: try later), or nothing,
  when its handler died: then it is handled again, and the chat's list of applied event ids
  keeps a step from being applied twice.
- Every replica beats a heartbeat into a sorted set and lists the chats it has work in
  flight for. A replica whose heartbeat is older than the lease is dead: one surviving
  replica (a lease on the dead one) resumes each of its chats from the state in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Any, Literal

from conversation.autopipeline import later
from conversation.identity import key_part, qualify
from conversation.job_records import pipelined
from conversation.keys import Keys
from conversation.keys import current as current_keys
from conversation.store import UPDATE_DONE_TTL_S, _s, is_cluster_client, now_ms

log = logging.getLogger("conversation.leases")


# 1 = leased to you; 0 = done already; -1 = leased to a live handler (maybe yourself).
# Any other value is done too: the marker of the release before leases ("1").
CLAIM_UPDATE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 4) ~= 'run:' then return 0 end
if v then return -1 end
redis.call('SET', KEYS[1], 'run:' .. ARGV[1], 'PX', tonumber(ARGV[2]))
return 1
"""

Claim = Literal["new", "done", "busy"]


def replica_id() -> str:
    """This process's id: BOT_REPLICA_ID, or host, pid and a random part (never reused)."""
    given = os.environ.get("BOT_REPLICA_ID", "").strip()
    if given:
        return given[:64]
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{secrets.token_hex(3)}"


class Leases:
    def __init__(self, redis: Any, replica: str, *, keys: Keys | None = None, lease_ms: int = 10_000) -> None:
        self.r = redis
        self.k = keys or current_keys()
        self.replica = replica
        self.lease_ms = lease_ms
        self._claim_update = redis.register_script(CLAIM_UPDATE)

    # --- updates ---------------------------------------------------------------------------

    async def claim_update(
        self, update_id: int | str, lease_ms: int | None = None, chat: int | str | None = None
    ) -> Claim:
        """The lease covers the update until its event is applied (step, save). A short one
        is safe: if it lapses early, the chat's applied ids stop a second step. `chat`: the
        update's chat, when it has one (its lease is kept with the chat's keys)."""
        lease = lease_ms or self.lease_ms
        got = int(await self._claim_update(keys=[self.k.update(update_id, chat)], args=[self.replica, lease]))
        return {1: "new", 0: "done"}.get(got, "busy")  # type: ignore[return-value]

    async def claim_listing(self, key: str, chat_id: str, lease_ms: int | None = None) -> Claim:
        """`claim_update` by the lease's key, with the chat listed as worked on here
        (`working_on`) in the same round trip: two commands at once on a cluster, whose
        pipelines take no scripts. The caller unlists it (`finished_with`) when done, even
        for a duplicate."""
        args = [self.replica, lease_ms or self.lease_ms]
        listing = self.k.replica_chats(self.replica)
        if is_cluster_client(self.r):
            got, _ = await asyncio.gather(
                self._claim_update(keys=[key], args=args), self.r.sadd(listing, chat_id)
            )
        else:

            def fill(p: Any) -> None:
                p.evalsha(self._claim_update.sha, 1, key, *args)
                p.sadd(listing, chat_id)

            got, _ = await pipelined(self.r, fill, CLAIM_UPDATE)
        return {1: "new", 0: "done"}.get(int(got), "busy")  # type: ignore[return-value]

    async def update_done(self, update_id: int | str, chat: int | str | None = None) -> None:
        await self.mark_done(self.k.update(update_id, chat))

    async def mark_done(self, key: str) -> None:
        """`update_done` by the lease's key (`Keys.update`)."""
        await self.r.set(key, "done", ex=UPDATE_DONE_TTL_S)

    async def release_update(self, update_id: int | str, chat: int | str | None = None) -> None:
        """Handling failed before its event was applied: the next delivery tries again."""
        await self.r.delete(self.k.update(update_id, chat))

    # --- replicas --------------------------------------------------------------------------

    async def beat(self) -> None:
        await self.r.zadd(self.k.replicas, {self.replica: now_ms()})

    async def retire(self) -> None:
        """Stopping: counted dead from now on, so another replica resumes what is left."""
        await self.r.zadd(self.k.replicas, {self.replica: 0})

    async def live(self) -> list[str]:
        return [_s(m) for m in await self.r.zrangebyscore(self.k.replicas, now_ms() - self.lease_ms, "+inf")]

    async def dead(self) -> list[str]:
        stale = await self.r.zrangebyscore(self.k.replicas, "-inf", f"({now_ms() - self.lease_ms}")
        return [_s(m) for m in stale if _s(m) != self.replica]

    async def working_on(self, chat_id: int | str) -> None:
        """The chat has work in flight here; it stays listed until `finished_with`."""
        await self.r.sadd(self.k.replica_chats(self.replica), qualify(chat_id))

    async def finished_with(self, chat_id: int | str, outbox: tuple[str, list[int]] | None = None) -> None:
        """The chat's work here ended: unlisted; `outbox` (its key, entries performed) emptied
        of those entries first, in the same round trip."""
        # Rides with this process's next round trip: until then the chat stays listed, and a
        # replica dying meanwhile only has its finished chat looked at again.
        listing = self.k.replica_chats(self.replica)
        if not outbox or not outbox[1]:
            await later(self.r).srem(listing, qualify(chat_id))
            return
        async with later(self.r).pipeline(transaction=False) as p:
            p.hdel(outbox[0], *outbox[1])
            p.srem(listing, qualify(chat_id))
            await p.execute()

    async def chats_of(self, replica: str) -> list[str]:
        return sorted({qualify(_s(c)) for c in await self.r.smembers(self.k.replica_chats(replica))})

    async def reap(self, dead: str, ttl_ms: int = 60_000) -> bool:
        """Become the one replica that takes `dead`'s work over (a lease: if this one dies
        too, another takes over after `ttl_ms`)."""
        return bool(await self.r.set(self.k.reaper(dead), self.replica, nx=True, px=ttl_ms))

    async def handed_over(self, dead: str, chat_id: str) -> None:
        # Listed before ids named their channel, a Telegram chat is its bare number.
        await self.r.srem(self.k.replica_chats(dead), chat_id, qualify(chat_id), key_part(chat_id))

    async def bury(self, dead: str) -> None:
        """Every chat of `dead` is resumed: forget it."""
        if await self.r.scard(self.k.replica_chats(dead)) == 0:
            await self.r.zrem(self.k.replicas, dead)
            await self.r.delete(self.k.reaper(dead))

    async def health(self) -> None:
        """A write and a read that must succeed (raises otherwise): an answering Redis that
        refuses commands (no quorum, out of memory, read-only) is not healthy."""
        key = self.k.health(self.replica)
        stamp = str(now_ms())
        await self.r.set(key, stamp, px=60_000)
        if _s(await self.r.get(key)) != stamp:
            raise RuntimeError("redis read back a different value")
