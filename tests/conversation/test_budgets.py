"""Budgets under concurrency, on fakeredis, a real Redis or the cluster (REDIS_URL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from conversation import budgets, keys
from conversation.budgets import Budgets, Defaults

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def make(redis, **defaults) -> Budgets:
    return Budgets(redis, keys.current(), Defaults(**defaults))


async def test_100_concurrent_reservations_against_a_budget_that_fits_10(redis):
    b = make(redis, user_day=10.0)
    got = await asyncio.gather(
        *(b.reserve(f"i{n}", "tg:7", "tg:7", 1.0, check_approval=False, now=NOW) for n in range(100))
    )
    assert sum(o.ok for o in got) == 10
    refused = [o for o in got if not o.ok]
    assert all(o.scope == "user:tg:7" and o.period == "day" and o.limit == 10.0 for o in refused)
    assert (await b.used("user:tg:7", now=NOW)) == {"day": 10.0, "month": 10.0}


async def test_a_chat_budget_and_users_sharing_it_race_without_overspend(redis):
    b = make(redis, chat_month=5.0)
    got = await asyncio.gather(
        *(b.reserve(f"i{n}", f"tg:{n % 7}", "tg:-100", 0.5, check_approval=False, now=NOW) for n in range(40))
    )
    assert sum(o.ok for o in got) == 10
    assert (await b.used("chat:tg:-100", now=NOW))["month"] == 5.0


async def test_a_reservation_is_made_once_per_intent_and_settled_once(redis):
    b = make(redis, user_day=10.0)
    assert (await b.reserve("same", "tg:7", "tg:7", 4.0, check_approval=False, now=NOW)).ok
    assert (await b.reserve("same", "tg:7", "tg:7", 4.0, check_approval=False, now=NOW)).ok
    assert (await b.used("user:tg:7", now=NOW))["day"] == 4.0
    # 3 of 4 records done: a quarter back, once, whoever settles first.
    settled = await asyncio.gather(*(b.settle("same", 0.25) for _ in range(5)))
    assert sum(settled) == 1
    assert (await b.used("user:tg:7", now=NOW))["day"] == 3.0
    assert not await b.release("same")


async def test_a_reservation_kept_with_its_job_is_settled_without_reading_it_and_still_once(
    redis, monkeypatch
):
    b = make(redis, user_day=10.0)
    assert (await b.reserve("kept", "tg:7", "tg:7", 4.0, check_approval=False, now=NOW)).ok
    record = b.taken("kept")
    assert record and b.taken("kept") == ""  # handed over once, to the job's record

    async def no_read(*a):  # type: ignore[no-untyped-def]
        raise AssertionError("the reservation was read")

    monkeypatch.setattr(redis, "hget", no_read)
    settled = await asyncio.gather(*(b.settle("kept", 0.5, record) for _ in range(3)))
    assert sum(settled) == 1  # the script still settles it once
    assert (await b.used("user:tg:7", now=NOW))["day"] == 2.0


async def test_the_threshold_asks_for_approval_and_reserves_nothing(redis):
    b = make(redis, approval=2.0, user_day=100.0)
    out = await b.reserve("big", "tg:7", "tg:7", 2.5, check_approval=True, now=NOW)
    assert not out.ok and out.approval == 2.0
    assert (await b.used("user:tg:7", now=NOW))["day"] == 0.0
    assert (await b.reserve("big", "tg:7", "tg:7", 2.5, check_approval=False, now=NOW)).ok
    # A personal threshold (set by an admin) wins over the default.
    await b.set_limit("user:tg:8", "approval", 10.0)
    assert (await b.reserve("mid", "tg:8", "tg:8", 5.0, check_approval=True, now=NOW)).ok


async def test_limits_set_per_id_and_reset_to_the_defaults(redis):
    b = make(redis, user_day=1.0)
    await b.set_limit("user:tg:7", "day", 50.0)
    await b.set_limit("user:tg:7", "month", -1)
    assert await b.limits("user:tg:7") == {"day": 50.0, "month": None, "approval": None}
    assert (await b.reserve("x", "tg:7", "tg:7", 20.0, check_approval=False, now=NOW)).ok
    await b.reset("user:tg:7")
    assert (await b.limits("user:tg:7"))["day"] == 1.0
    out = await b.reserve("y", "tg:7", "tg:7", 0.5, check_approval=False, now=NOW)
    assert not out.ok and out.used == 20.0


async def test_spending_renews_with_the_utc_day(redis):
    b = make(redis, user_day=1.0)
    assert (await b.reserve("a", "tg:7", "tg:7", 1.0, check_approval=False, now=NOW)).ok
    assert not (await b.reserve("b", "tg:7", "tg:7", 1.0, check_approval=False, now=NOW)).ok
    tomorrow = budgets.renews(NOW, "day")
    assert tomorrow == datetime(2026, 12, 4, tzinfo=UTC)
    assert (await b.reserve("b", "tg:7", "tg:7", 1.0, check_approval=False, now=tomorrow)).ok
    assert budgets.renews(NOW, "month") == datetime(2027, 1, 1, tzinfo=UTC)
    assert (await b.spent_this_month(now=NOW)) == {"tg:7": 2.0}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12.5", 12.5),
        ("0", 0.0),
        ("none", -1.0),
        ("不限", -1.0),
        ("-5", None),
        ("abc", None),
        ("nan", None),
        ("inf", None),
        ("1e309", None),
        ("1e13", None),
        ("", None),
    ],
)
def test_amounts_admins_type(text, value):
    assert budgets.parse_amount(text) == value


def test_which_budgets_apply():
    assert budgets.scopes_of("tg:7", "tg:7") == ["user:tg:7"]  # a private chat is its user
    assert budgets.scopes_of("tg:7", "tg:-100") == ["user:tg:7", "chat:tg:-100"]
    assert budgets.scopes_of("api:key_a", "api:sub_b") == ["user:api:key_a"]  # an agent's submission
