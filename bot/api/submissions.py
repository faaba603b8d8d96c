"""Submissions: an agent's input as a chat of its own (`api:sub_…`), run by the same runner,
store, watcher, budgets and approvals as the chat channels. What the API shows of it (the
row report, the estimate, the job, the outcome) is recorded here from the chat's steps.

Keys (P the prefix):

    P:{sub:<id>}            HASH key, user, created, metadata, callback, report, estimate,
                            job, state, outcome, message (kept 30 days)
    P:{subs:<key id>}       ZSET submission id -> created (ms): a key's own, for listing
    P:{idem:<key id>:<h>}   "<body hash> <submission id>" for 24 h: the same key again
                            returns the first submission (h: SHA-256 of the idempotency key)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import locales
from conversation import identity
from conversation.events import Effect, Event, Inspected, Prechecked, Reply, Watch
from conversation.keys import Keys
from conversation.state import ChatState

KEPT_S = 30 * 86400
IDEMPOTENT_S = 24 * 3600
MAX_ROW_ERRORS = 200

# The chat's phase as the API names it (before a job exists).
PHASES = {
    "resolving": "checking",
    "inspecting": "checking",
    "uploading": "checking",
    "prechecking": "checking",
    "awaiting_input": "failed",
    "awaiting_fix": "invalid",
    "awaiting_confirm": "awaiting_confirmation",
    "awaiting_model": "awaiting_confirmation",
    "awaiting_mode": "awaiting_confirmation",
    "awaiting_count": "checking",
    "awaiting_approval": "awaiting_approval",
    "submitting": "submitting",
    "reconciling": "submitting",
}
# A submission that ended before a job, by the message that ended it.
OUTCOMES = {
    "flow.estimate_only_done": "estimated",
    "flow.dropped": "cancelled",
    "approval.rejected_user": "rejected",
    "approval.rejected_reason": "rejected",
    "approval.expired_user": "expired",
    "flow.no_valid_rows": "invalid",
    "flow.file_unusable": "invalid",
}
TERMINAL = {
    "estimated",
    "cancelled",
    "rejected",
    "expired",
    "failed",
    "invalid",
    "completed",
    "partially_completed",
}


def chat_of(sub_id: str) -> str:
    return f"{identity.API}:{sub_id}"


def new_id() -> str:
    return "sub_" + secrets.token_hex(8)


def _s(v: bytes | str | None) -> str:
    return v.decode() if isinstance(v, bytes) else (v or "")


class Submissions:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.r = redis
        self.k = keys

    def key(self, sub_id: str) -> str:
        return f"{self.k.prefix}:{{sub:{sub_id}}}"

    def index(self, key_id: str) -> str:
        return f"{self.k.prefix}:{{subs:{key_id}}}"

    def idem_key(self, key_id: str, idem: str) -> str:
        return f"{self.k.prefix}:{{idem:{key_id}:{hashlib.sha256(idem.encode()).hexdigest()[:32]}}}"

    async def claim_idempotency(
        self, key_id: str, idem: str, body_hash: str, sub_id: str
    ) -> tuple[str, str] | None:
        """None: this request is the first with that key (it proceeds as `sub_id`). Else the
        first one's (body hash, submission id)."""
        k = self.idem_key(key_id, idem)
        if await self.r.set(k, f"{body_hash} {sub_id}", nx=True, ex=IDEMPOTENT_S):
            return None
        got = _s(await self.r.get(k))
        first_hash, _, first_id = got.partition(" ")
        return first_hash, first_id

    async def create(self, sub_id: str, key_id: str, user: str, **fields: Any) -> None:
        now = int(time.time() * 1000)
        mapping = {"key": key_id, "user": user, "created": now, "state": "checking"}
        mapping |= {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in fields.items()}
        await self.r.hset(self.key(sub_id), mapping=mapping)
        await self.r.expire(self.key(sub_id), KEPT_S)
        await self.r.zadd(self.index(key_id), {sub_id: now})

    async def get(self, sub_id: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self.r.hgetall(self.key(sub_id))).items()}

    async def set(self, sub_id: str, **fields: Any) -> None:
        mapping = {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in fields.items()}
        await self.r.hset(self.key(sub_id), mapping=mapping)

    async def page(self, key_id: str, before_ms: int | None, limit: int) -> list[tuple[str, int]]:
        top = f"({before_ms}" if before_ms is not None else "+inf"
        got = await self.r.zrevrangebyscore(
            self.index(key_id), top, "-inf", start=0, num=limit, withscores=True
        )
        return [(_s(i), int(score)) for i, score in got]

    def changes(self, state: ChatState, event: Event, effects: list[Effect]) -> dict[str, Any]:
        """What one step of a submission's chat tells the API (pure)."""
        out: dict[str, Any] = {}
        if isinstance(event, Inspected):
            r = event.report
            rows = r.get("rows") or {}
            errors = [
                {"row": e.get("row"), "column": e.get("column"), "message": e.get("message", "")}
                for e in (r.get("errors") or [])[:MAX_ROW_ERRORS]
            ]
            out["report"] = {
                "format": r.get("format"),
                "rows": {k: rows.get(k, 0) for k in ("total", "valid", "invalid", "skipped")},
                "errors": errors,
                "fatal": (r.get("fatal") or {}).get("message"),
            }
        if isinstance(event, Prechecked):
            out["estimate"] = {k: v for k, v in event.estimate.items() if v is not None}
        for effect in effects:
            if isinstance(effect, Watch):
                out["job"] = effect.job_id
        if state.phase == "idle" and "job" not in out:
            replies = [e for e in effects if isinstance(e, Reply)]
            if replies:
                said = [k for r in replies for k, _ in r.parts]
                out["outcome"] = next((OUTCOMES[k] for k in said if k in OUTCOMES), "failed")
                out["message"] = "\n".join(locales.t("en", k, **p) for r in replies for k, p in r.parts)[
                    :2000
                ]
        elif state.pending is not None:
            out["phase_state"] = PHASES.get(state.phase, "checking")
        return out
