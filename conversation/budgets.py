"""Budgets: what a user and a chat may spend per UTC day and month, in the service's unit.

A submit reserves its estimate against every budget that applies, atomically (one script
over the `{spend}` slot: replicas and concurrent submits of one user cannot overspend);
a job that ends with records not run (or failed, when the service does not bill them)
gives that share back once (`settle`). Amounts are kept in micro-units: integers, so that
sums are exact.

Limits: defaults from the settings (`BOT_BUDGET_USER_DAY`, …), per id by admins (`/budget`),
kept in `P:{spend}:limits` as `<scope>:<period>` (scope `user:<id>` or `chat:<id>`, period
day | month | approval); -1 means "no limit" set explicitly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from conversation.keys import Keys

MICRO = 1_000_000
PERIODS = ("day", "month")
DAY_TTL_S = 3 * 86400
MONTH_TTL_S = 40 * 86400
MAX_AMOUNT = 1e12  # larger is nonsense (and past exact integers in a script)

# KEYS: limits, day, month, reservations.
# ARGV: intent, amount, check threshold (0|1), default threshold, user, record, n scopes,
#       then per scope: name, default day limit, default month limit. -1: no limit.
RESERVE = """
local have = redis.call('HGET', KEYS[4], ARGV[1])
if have then return {'ok'} end
local amount = tonumber(ARGV[2])
if ARGV[3] == '1' then
  local t = tonumber(redis.call('HGET', KEYS[1], 'user:' .. ARGV[5] .. ':approval') or ARGV[4])
  if t >= 0 and amount > t then return {'approval', tostring(t)} end
end
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  local scope = ARGV[8 + 3 * i]
  for j, per in ipairs({'day', 'month'}) do
    local lim = tonumber(redis.call('HGET', KEYS[1], scope .. ':' .. per) or ARGV[8 + 3 * i + j])
    if lim >= 0 then
      local used = tonumber(redis.call('HGET', KEYS[1 + j], scope) or '0')
      if used + amount > lim then return {'over', scope, per, tostring(lim), tostring(used)} end
    end
  end
end
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[2], ARGV[8 + 3 * i], amount)
  redis.call('HINCRBY', KEYS[3], ARGV[8 + 3 * i], amount)
end
redis.call('EXPIRE', KEYS[2], DAY_TTL)
redis.call('EXPIRE', KEYS[3], MONTH_TTL)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
return {'ok'}
""".replace("MONTH_TTL", str(MONTH_TTL_S)).replace("DAY_TTL", str(DAY_TTL_S))

# KEYS: reservations, day, month. ARGV: intent, refund, scopes… Once per intent.
MADE_KEPT = 10_000
SETTLE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
local refund = tonumber(ARGV[2])
for k = 2, 3 do
  if refund > 0 and redis.call('EXISTS', KEYS[k]) == 1 then
    for i = 3, #ARGV do
      local left = redis.call('HINCRBY', KEYS[k], ARGV[i], -refund)
      if left < 0 then redis.call('HSET', KEYS[k], ARGV[i], 0) end
    end
  end
end
return 1
"""


def to_micro(amount: float) -> int:
    return round(amount * MICRO)


def from_micro(micro: int | float) -> float:
    return round(micro / MICRO, 6)


def parse_amount(text: str) -> float | None:
    """An admin's amount: a finite number ≥ 0, or none/off/unlimited (-1). Else None."""
    t = text.strip().lower()
    if t in ("none", "off", "unlimited", "-", "∞", "无", "不限"):
        return -1.0
    try:
        v = float(t)
    except ValueError:
        return None
    if not math.isfinite(v) or v < 0 or v > MAX_AMOUNT:
        return None
    return v


def day_of(now: datetime) -> str:
    return now.strftime("%Y%m%d")


def month_of(now: datetime) -> str:
    return now.strftime("%Y%m")


def renews(now: datetime, period: str) -> datetime:
    """When a period's spending starts again at zero (UTC)."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start + timedelta(days=1)
    if now.month == 12:
        return start.replace(year=now.year + 1, month=1, day=1)
    return start.replace(month=now.month + 1, day=1)


@dataclass(frozen=True)
class Defaults:
    user_day: float | None = None
    user_month: float | None = None
    chat_day: float | None = None
    chat_month: float | None = None
    approval: float | None = None  # an estimate above this waits for an admin

    def of(self, scope: str, period: str) -> float | None:
        kind = scope.split(":", 1)[0]
        return getattr(self, f"{kind}_{period}", None) if period in PERIODS else self.approval

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.user_day, self.user_month, self.chat_day, self.chat_month))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    approval: float | None = None  # the threshold the estimate is above (approval needed)
    scope: str = ""  # the budget it is over: user:<id> | chat:<id>
    period: str = ""
    limit: float = 0.0
    used: float = 0.0


def _micro_or_none(v: float | None) -> str:
    return "-1" if v is None or v < 0 else str(to_micro(v))


def scopes_of(user: str, chat: str) -> list[str]:
    # A private chat is its user: its spending is counted once. An agent's submission is a
    # chat of its own: only its key's owner has budgets.
    shared_chat = chat and chat != user and not chat.startswith("api:")
    return [f"user:{user}"] + ([f"chat:{chat}"] if shared_chat else [])


class Budgets:
    def __init__(self, redis: Redis, keys: Keys, defaults: Defaults) -> None:
        self.r = redis
        self.k = keys
        self.defaults = defaults
        self._reserve = redis.register_script(RESERVE)
        self._settle = redis.register_script(SETTLE)
        # Reservations made here, by intent, until their job is recorded (`taken`): kept
        # with the job, its settling needs no read of the reservation.
        self._made: dict[str, str] = {}

    def _period_keys(self, now: datetime) -> tuple[str, str]:
        return self.k.spend(f"d:{day_of(now)}"), self.k.spend(f"m:{month_of(now)}")

    async def reserve(
        self,
        intent: str,
        user: str,
        chat: str,
        amount: float,
        *,
        check_approval: bool,
        now: datetime | None = None,
    ) -> Outcome:
        """Reserve `amount` for the submit `intent` against the user's and the chat's
        budgets, all or none; an intent already reserved is ok (a submit carried on after
        a restart). With `check_approval`, an amount above the user's threshold reserves
        nothing and says so."""
        now = now or datetime.now(UTC)
        day, month = self._period_keys(now)
        scopes = scopes_of(user, chat)
        micro = to_micro(max(amount, 0.0))
        record = json.dumps({"a": micro, "d": day, "m": month, "s": scopes})
        args: list[Any] = [intent, micro, int(check_approval), _micro_or_none(self.defaults.approval)]
        args += [user, record, len(scopes)]
        for scope in scopes:
            args += [scope, _micro_or_none(self.defaults.of(scope, "day"))]
            args.append(_micro_or_none(self.defaults.of(scope, "month")))
        got = await self._reserve(keys=[self.k.spend("limits"), day, month, self.k.spend("res")], args=args)
        kind = got[0].decode() if isinstance(got[0], bytes) else got[0]
        if kind == "ok":
            self._made[intent] = record
            while len(self._made) > MADE_KEPT:  # intents whose job never came: the oldest go
                del self._made[next(iter(self._made))]
            return Outcome(True)
        if kind == "approval":
            return Outcome(False, approval=from_micro(float(got[1])))
        vals = [g.decode() if isinstance(g, bytes) else str(g) for g in got[1:]]
        return Outcome(
            False,
            scope=vals[0],
            period=vals[1],
            limit=from_micro(float(vals[2])),
            used=from_micro(float(vals[3])),
        )

    def taken(self, intent: str) -> str:
        """The reservation this process made for `intent` ('' when none): to keep with the
        intent's job, and give back to `settle` when the job ends."""
        return self._made.pop(intent, "")

    async def settle(self, intent: str, unused: float, reservation: str = "") -> bool:
        """Give back the share `unused` (0..1) of the intent's reservation, once. True when
        this call settled it (False: nothing reserved, or settled already). `reservation`:
        the record `taken` gave (the script still checks it is not settled); else read."""
        raw = reservation or await self.r.hget(self.k.spend("res"), intent)
        if not raw:
            return False
        rec = json.loads(raw)
        refund = round(rec["a"] * min(max(unused, 0.0), 1.0))
        done = await self._settle(
            keys=[self.k.spend("res"), rec["d"], rec["m"]], args=[intent, refund, *rec["s"]]
        )
        return bool(done)

    async def release(self, intent: str) -> bool:
        """The submit was refused or never happened: everything back."""
        return await self.settle(intent, 1.0)

    async def limits(self, scope: str) -> dict[str, float | None]:
        """The limits that apply to a scope: set for it, else the defaults (None: no limit)."""
        got = await self.r.hmget(self.k.spend("limits"), [f"{scope}:{p}" for p in (*PERIODS, "approval")])
        out: dict[str, float | None] = {}
        for period, raw in zip((*PERIODS, "approval"), got, strict=True):
            if raw is None:
                out[period] = self.defaults.of(scope, period)
            else:
                v = int(raw)
                out[period] = None if v < 0 else from_micro(v)
        return out

    async def used(self, scope: str, now: datetime | None = None) -> dict[str, float]:
        day, month = self._period_keys(now or datetime.now(UTC))
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hget(day, scope)
            pipe.hget(month, scope)
            d, m = await pipe.execute()
        return {"day": from_micro(int(d or 0)), "month": from_micro(int(m or 0))}

    async def set_limit(self, scope: str, period: str, amount: float) -> None:
        await self.r.hset(self.k.spend("limits"), f"{scope}:{period}", _micro_or_none(amount))

    async def reset(self, scope: str) -> None:
        """Back to the defaults for this id."""
        await self.r.hdel(self.k.spend("limits"), *[f"{scope}:{p}" for p in (*PERIODS, "approval")])

    async def spent_this_month(self, limit: int = 200, now: datetime | None = None) -> dict[str, float]:
        """Spending per user this month (metrics), the largest `limit` of them."""
        got = await self.r.hgetall(self._period_keys(now or datetime.now(UTC))[1])
        users = {
            (k.decode() if isinstance(k, bytes) else k)[5:]: from_micro(int(v))
            for k, v in got.items()
            if (k.decode() if isinstance(k, bytes) else k).startswith("user:")
        }
        return dict(sorted(users.items(), key=lambda kv: -kv[1])[:limit])
