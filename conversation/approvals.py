"""Approvals of large jobs, in Redis: asked once, decided once, whoever decides first.

A record `P:{approval}:<id>` holds what the admins were shown and its state: waiting, then
approved | rejected | expired | withdrawn, set by one script so that two admins pressing at
once (on two replicas) cannot both win. The decision is then delivered to the requester's
chat (an event its step applies once: only a chat still awaiting that approval moves on).
`P:{approval}:due` schedules what is left to do: a waiting approval's expiry, a decided
one's delivery until it is confirmed (a replica killed between the two is covered by the
sweep of any other).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from conversation.keys import Keys

KEPT_S = 7 * 86400  # a decided approval's record, for late presses and /audit context
REDELIVER_MS = 30_000  # a decision not confirmed delivered by then is delivered again

# KEYS: record, due. ARGV: id, verdict, by, reason, now (ms), redeliver at (ms).
DECIDE = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'missing', ''} end
if st ~= 'waiting' then return {st, redis.call('HGET', KEYS[1], 'by') or ''} end
local verdict = ARGV[2]
if verdict ~= 'withdrawn' and tonumber(redis.call('HGET', KEYS[1], 'deadline')) <= tonumber(ARGV[5]) then
  verdict = 'expired'
end
redis.call('HSET', KEYS[1], 'state', verdict, 'by', ARGV[3], 'reason', ARGV[4], 'at', ARGV[5])
redis.call('EXPIRE', KEYS[1], KEPT)
if verdict == 'withdrawn' then redis.call('ZREM', KEYS[2], ARGV[1])
else redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1]) end
return {'won', verdict}
""".replace("KEPT", str(KEPT_S))


@dataclass(frozen=True)
class Approval:
    id: str
    state: str
    chat: str
    user: str
    filename: str
    rows: int
    model: str
    mode: str
    cost: str
    currency: str
    by: str = ""
    reason: str = ""
    messages: tuple[tuple[str, str, str], ...] = ()  # (admin chat, message id, lang)

    @staticmethod
    def of(approval_id: str, raw: dict[bytes, bytes]) -> Approval:
        d = {k.decode(): v.decode() for k, v in raw.items()}
        msgs = tuple(tuple(m) for m in json.loads(d.get("msgs") or "[]"))
        return Approval(
            approval_id,
            d.get("state", ""),
            d.get("chat", ""),
            d.get("user", ""),
            d.get("filename", ""),
            int(d.get("rows") or 0),
            d.get("model", ""),
            d.get("mode", ""),
            d.get("cost", ""),
            d.get("currency", ""),
            d.get("by", ""),
            d.get("reason", ""),
            msgs,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Decision:
    won: bool
    state: str  # the verdict that holds: this call's when won, else the earlier one
    by: str = ""


class Approvals:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.r = redis
        self.k = keys
        self._decide = redis.register_script(DECIDE)

    async def ask(self, approval_id: str, deadline_ms: int, **fields: Any) -> bool:
        """Record a waiting approval (once: asking again, after a restart, changes nothing)."""
        key = self.k.approval(approval_id)
        if not await self.r.hsetnx(key, "state", "waiting"):
            return False
        mapping = {k: str(v) for k, v in fields.items()} | {"deadline": str(deadline_ms)}
        await self.r.hset(key, mapping=mapping)
        await self.r.expire(key, KEPT_S + (deadline_ms // 1000))
        await self.r.zadd(self.k.approvals_due, {approval_id: deadline_ms})
        return True

    async def add_messages(self, approval_id: str, sent: list[tuple[str, str, str]]) -> None:
        await self.r.hset(self.k.approval(approval_id), "msgs", json.dumps(sent))

    async def get(self, approval_id: str) -> Approval | None:
        raw = await self.r.hgetall(self.k.approval(approval_id))
        return Approval.of(approval_id, raw) if raw else None

    async def decide(self, approval_id: str, verdict: str, by: str, reason: str, now: int) -> Decision:
        got = await self._decide(
            keys=[self.k.approval(approval_id), self.k.approvals_due],
            args=[approval_id, verdict, by, reason[:300], now, now + REDELIVER_MS],
        )
        first, second = (g.decode() if isinstance(g, bytes) else str(g) for g in got)
        if first == "won":
            return Decision(True, second, by)
        return Decision(False, first, second)

    async def delivered(self, approval_id: str) -> None:
        await self.r.zrem(self.k.approvals_due, approval_id)

    async def due(self, now: int, limit: int = 100) -> list[str]:
        got = await self.r.zrangebyscore(self.k.approvals_due, "-inf", now, start=0, num=limit)
        return [g.decode() if isinstance(g, bytes) else g for g in got]

    async def postpone(self, approval_id: str, now: int) -> None:
        await self.r.zadd(self.k.approvals_due, {approval_id: now + REDELIVER_MS})
