"""API keys: made and revoked by the operator (`batchjob-bot keys …`), shown once, kept
hashed in Redis. A key is `bjk_<id>_<secret>`: the id finds its record, the secret is
compared with its SHA-256 in constant time. Each key names the owner its submissions are
spent for (budgets, approvals: `api:<id>` unless the operator names a person, e.g. tg:42),
whether its submissions wait for /confirm (the default), and the secret its callbacks are
signed with (Standard Webhooks, `whsec_…`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from conversation import identity
from conversation.keys import Keys

_KEY = re.compile(r"^bjk_([a-z0-9]{12})_([A-Za-z0-9_-]{32,64})$")


@dataclass(frozen=True)
class ApiKey:
    id: str
    owner: str  # channel-qualified: whose budgets and approvals apply
    confirm: bool  # submissions go on past the estimate without /confirm
    webhook_secret: str
    created_ms: int
    revoked: bool = False
    name: str = ""

    @property
    def user(self) -> str:
        return self.owner or f"{identity.API}:key_{self.id}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.r = redis
        self.k = keys

    def _key(self, key_id: str) -> str:
        return f"{self.k.prefix}:{{apikey:{key_id}}}"

    @property
    def _index(self) -> str:
        return f"{self.k.prefix}:{{apikeys}}"

    async def create(self, name: str = "", owner: str = "", confirm: bool = False) -> tuple[str, ApiKey]:
        """A new key: (the key itself, shown once; its record)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        now = int(time.time() * 1000)
        rec = ApiKey(
            key_id, identity.qualify(owner) if owner else "", confirm, webhook_secret, now, False, name
        )
        await self.r.hset(
            self._key(key_id),
            mapping={
                "hash": _hash(secret),
                "owner": rec.owner,
                "confirm": int(confirm),
                "whsec": webhook_secret,
                "created": now,
                "name": name[:100],
                "revoked": 0,
            },
        )
        await self.r.zadd(self._index, {key_id: now})
        return f"bjk_{key_id}_{secret}", rec

    async def get(self, key_id: str) -> ApiKey | None:
        raw = await self.r.hgetall(self._key(key_id))
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return ApiKey(
            key_id,
            d.get("owner", ""),
            d.get("confirm") == "1",
            d.get("whsec", ""),
            int(d.get("created") or 0),
            d.get("revoked") == "1",
            d.get("name", ""),
        )

    async def check(self, presented: str) -> ApiKey | None:
        """The key's record when `presented` is a live key; None otherwise (same work either way)."""
        m = _KEY.match(presented.strip())
        if not m:
            return None
        raw = await self.r.hget(self._key(m.group(1)), "hash")
        expected = raw.decode() if raw else _hash("not-a-key")
        if not hmac.compare_digest(expected, _hash(m.group(2))) or raw is None:
            return None
        rec = await self.get(m.group(1))
        return rec if rec is not None and not rec.revoked else None

    async def list(self) -> list[ApiKey]:
        ids = [i.decode() for i in await self.r.zrange(self._index, 0, -1)]
        return [k for k in [await self.get(i) for i in ids] if k is not None]

    async def revoke(self, key_id: str) -> bool:
        if not await self.r.exists(self._key(key_id)):
            return False
        await self.r.hset(self._key(key_id), "revoked", 1)
        return True
