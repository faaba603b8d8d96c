"""The audit trail: submits, approvals, rejections, expiries and budget changes, in one
capped Redis stream (`P:{audit}`), newest last; shown to admins with /audit."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from conversation.autopipeline import later
from conversation.keys import Keys

KEPT = 10_000  # entries (approximately: the stream is trimmed in whole nodes, cheaply)
SCANNED = 2_000  # entries read to answer one /audit filtered by user


@dataclass(frozen=True)
class Entry:
    at_ms: int
    kind: str  # submit | approval_asked | approved | rejected | expired | withdrawn | budget
    user: str  # whom it concerns (the submitter, the id whose budget changed)
    by: str  # who did it (the same user, or the admin)
    detail: str  # job id, cost, file name, reason, budget change …


class Audit:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.r = redis
        self.key = keys.audit

    async def record(self, kind: str, user: str, by: str = "", detail: str = "") -> None:
        fields = {"kind": kind, "user": user, "by": by or user, "detail": detail[:300]}
        # Rides with this process's next round trip (the state saved after what it records).
        await later(self.r).xadd(self.key, fields, maxlen=KEPT, approximate=True)  # type: ignore[arg-type]

    async def last(self, count: int, user: str | None = None) -> list[Entry]:
        """The newest `count` entries, newest first; only those about or by `user` if given."""
        got = await self.r.xrevrange(self.key, count=SCANNED if user else count)
        out: list[Entry] = []
        for entry_id, raw in got:
            d = {k.decode(): v.decode() for k, v in raw.items()}
            e = Entry(
                int(entry_id.decode().split("-")[0]),
                d.get("kind", ""),
                d.get("user", ""),
                d.get("by", ""),
                d.get("detail", ""),
            )
            if user is None or user in (e.user, e.by):
                out.append(e)
            if len(out) >= count:
                break
        return out
