"""Callbacks: each state change of a submission that matters, POSTed to the URL the agent
gave, at least once, from any replica.

A delivery is queued in Redis (`P:{cb}:<id>` with its URL, body and attempts; `P:{cb}:due`
schedules it) before anything is sent, so a replica killed mid-way leaves it to the others.
Signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
HMAC-SHA256 with the key's `whsec_` secret, by the `standardwebhooks` package); a retry keeps
its `webhook-id`, so receivers dedupe. Retried with backoff (5 s doubling, at most an hour
apart) for 24 h. URLs must resolve to public addresses (loopback only with the test switch);
the request is pinned to the address checked, and redirects are not followed.

An OpenClaw target (`{"openclaw": {"url", "token", "session_key"?, "agent_id"?}}`) gets the
terminal summary as an agent turn: `POST {url}/hooks/agent` with `Authorization: Bearer
<token>` and `{"message", "name", "deliver", "sessionKey"?, "agentId"?}` (docs/agents.md says
what is relied on).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from batchjob.fetch import FetchError, pinned
from conversation.cancel import check_cancelled
from conversation.keys import Keys

log = logging.getLogger("bot.api.callbacks")

GIVE_UP_MS = 24 * 3600 * 1000
LEASE_MS = 30_000  # a delivery being sent is not taken by another replica for this long
TIMEOUT_S = 10.0

# Take the due deliveries (at most ARGV[3]), moving each a lease ahead: one sender each.
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""


def backoff_ms(attempts: int) -> int:
    return int(min(3600.0, 5.0 * 2 ** max(0, attempts - 1)) * 1000)


class Callbacks:
    def __init__(self, redis: Any, keys: Keys, allow_loopback: bool = False) -> None:
        self.r = redis
        self.k = keys
        self.allow_loopback = allow_loopback
        self._claim = redis.register_script(CLAIM)
        self.sent = 0
        self.failed = 0

    def _key(self, delivery_id: str) -> str:
        return f"{self.k.prefix}:{{cb}}:{delivery_id}"

    @property
    def _due(self) -> str:
        return f"{self.k.prefix}:{{cb}}:due"

    async def enqueue(self, target: dict[str, Any], body: dict[str, Any], secret: str = "") -> str | None:
        """Queue one delivery of `body` to the submission's callback `target`."""
        if not target:
            return None
        delivery_id = "msg_" + secrets.token_hex(12)
        now = int(time.time() * 1000)
        fields = {
            "target": json.dumps(target),
            "body": json.dumps(body),
            "secret": secret,
            "first": now,
            "n": 0,
        }
        await self.r.hset(self._key(delivery_id), mapping=fields)
        await self.r.expire(self._key(delivery_id), GIVE_UP_MS // 1000 + 3600)
        await self.r.zadd(self._due, {delivery_id: now})
        return delivery_id

    async def _take(self, now: int, limit: int) -> list[str]:
        due = await self._claim(keys=[self._due], args=[now, now + LEASE_MS, limit])
        return [d.decode() if isinstance(d, bytes) else d for d in due]

    async def run_once(self, now: int | None = None, limit: int = 50) -> int:
        """Send what is due, all of it before returning; the number sent (delivered or not)."""
        now = int(time.time() * 1000) if now is None else now
        ids = await self._take(now, limit)
        await asyncio.gather(*(self._send(i, now) for i in ids))
        return len(ids)

    async def _send(self, delivery_id: str, now: int) -> None:
        raw = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (await self.r.hgetall(self._key(delivery_id))).items()
        }
        if not raw:
            await self.r.zrem(self._due, delivery_id)
            return
        target, body = json.loads(raw["target"]), raw["body"]
        try:
            ok = await self._post(delivery_id, target, body, raw.get("secret", ""))
        except Exception:  # one bad target must not stop the others
            log.exception("callback %s failed", delivery_id)
            ok = False
        if ok:
            self.sent += 1
            await self.r.zrem(self._due, delivery_id)
            await self.r.delete(self._key(delivery_id))
            return
        self.failed += 1
        attempts = int(raw.get("n") or 0) + 1
        if now - int(raw.get("first") or now) + backoff_ms(attempts) > GIVE_UP_MS:
            log.warning("callback %s given up after %d attempts", delivery_id, attempts)
            await self.r.zrem(self._due, delivery_id)
            await self.r.delete(self._key(delivery_id))
            return
        await self.r.hset(self._key(delivery_id), "n", attempts)
        await self.r.zadd(self._due, {delivery_id: now + backoff_ms(attempts)})

    async def _post(self, delivery_id: str, target: dict[str, Any], body: str, secret: str) -> bool:
        if "openclaw" in target:
            oc = target["openclaw"]
            url = str(oc["url"]).rstrip("/") + "/hooks/agent"
            doc = json.loads(body)
            turn: dict[str, Any] = {
                "message": doc.get("summary_text") or json.dumps(doc)[:4000],
                "name": "BatchJob",
                "deliver": True,
            }
            # OpenClaw refuses a sessionKey unless its hooks.allowRequestSessionKey is on:
            # sent only when the agent gave one.
            if oc.get("session_key"):
                turn["sessionKey"] = oc["session_key"]
            if oc.get("agent_id"):
                turn["agentId"] = oc["agent_id"]
            payload = json.dumps(turn)
            headers = {"Authorization": f"Bearer {oc.get('token', '')}", "Content-Type": "application/json"}
        else:
            url, payload = str(target["url"]), body
            stamp = datetime.now(UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": delivery_id,
                "webhook-timestamp": str(int(stamp.timestamp())),
                "webhook-signature": Webhook(secret).sign(delivery_id, stamp, payload),
            }
        try:
            pinned_url, host, ext = await pinned(url, self.allow_loopback)
        except FetchError:
            log.warning("callback %s: the URL is not a public address", delivery_id)
            return False
        # A client per delivery: requests go to the pinned address, and a pool keyed by address
        # would let one receiver's TLS connection carry a request meant for another name.
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as c:
            try:
                # The status is the answer; the body is never read (a receiver may send no end).
                request = c.build_request(
                    "POST", pinned_url, content=payload, headers={**headers, **host}, extensions=ext
                )
                resp = await c.send(request, stream=True)
                await resp.aclose()
            except httpx.HTTPError:
                return False
        return 200 <= resp.status_code < 300

    async def run(self, every_s: float = 1.0, concurrency: int = 50) -> None:
        """Send deliveries as they fall due, each in a task of its own (at most `concurrency`):
        a receiver that takes its time (up to the timeout) holds only its own delivery."""
        sending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    now = int(time.time() * 1000)
                    room = concurrency - len(sending)
                    ids = await self._take(now, room) if room > 0 else []
                    for delivery_id in ids:
                        task = asyncio.create_task(self._send(delivery_id, now))
                        sending.add(task)
                        task.add_done_callback(sending.discard)
                    if len(ids) < max(room, 1):
                        await asyncio.sleep(every_s if room > 0 else 0.05)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    check_cancelled()  # a cancel turned into another error must still stop
                    log.exception("callback round failed")
                    await asyncio.sleep(every_s)
        finally:
            for task in sending:  # their leases lapse: any replica sends them again
                task.cancel()
