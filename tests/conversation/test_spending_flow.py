"""Budgets through the whole flow: real store (fakeredis or REDIS_URL), the sandbox over
HTTP, a recording channel."""

from __future__ import annotations

import pytest

from conversation.approvals import REDELIVER_MS
from conversation.events import CommandReceived, FileReceived, TextReceived
from conversation.store import now_ms
from tests.conversation.test_flow import ADMIN, drain, make_app

CHAT = 100  # a user's private chat: its spending counts once, as the user's


@pytest.fixture
async def app(redis, channel, sandbox, tmp_path):
    # fast is 0.02 a record in the sandbox: 5 records a day
    a = make_app(redis, channel, sandbox, tmp_path, budget_user_day=0.1)
    yield a
    await a.client.aclose()


async def submit(app, write, name, body):
    src = write(name, body)
    await app.runner.handle(
        CHAT, FileReceived(str(src), name, 10, caption="fast", user_id=CHAT), client_lang="en"
    )


async def test_a_budget_is_reserved_given_back_for_failed_records_and_refused_past_it(
    app, channel, write, sandbox
):
    spending = app.runner.spending
    await submit(app, write, "a.csv", "prompt\nowl\nb [fail] owl\ncat\n")  # 0.06
    await drain(app)
    # Settled when it ended: the failed record (not billed) is given back.
    assert (await spending.budgets.used(f"user:tg:{CHAT}"))["day"] == pytest.approx(0.04)
    await submit(app, write, "b.csv", "prompt\na\nb\nc\n")  # 0.06: 0.10 in all, just fits
    await drain(app)
    submits = sandbox.state.submits
    await submit(app, write, "c.csv", "prompt\na\n")  # 0.02 more: over
    said = channel.texts()[-1]
    assert "does not fit your daily budget: 0.1 of 0.1 credits spent today, 0 left" in said
    assert "renews at" in said and "An admin can raise it" in said
    assert sandbox.state.submits == submits  # nothing posted
    # An admin raises it; the user's "ok" now submits the same file.
    await app.runner.handle(ADMIN, CommandReceived("budget", ("set", "user", str(CHAT), "day", "1"), ADMIN))
    assert (
        "Budget updated." in channel.texts()[-1] and "today: 0.1 of 1 spent, 0.9 left" in channel.texts()[-1]
    )
    await app.runner.handle(CHAT, TextReceived("ok", CHAT))
    assert sandbox.state.submits == submits + 1
    await drain(app)
    await app.runner.handle(CHAT, CommandReceived("budget", (), CHAT))
    assert "today: 0.12 of 1 spent, 0.88 left" in channel.texts()[-1]
    # The trail, for admins only.
    await app.runner.handle(CHAT, CommandReceived("audit", (), CHAT))
    assert channel.texts()[-1] == "Only an admin can do that."
    await app.runner.handle(ADMIN, CommandReceived("audit", ("10", str(CHAT)), ADMIN))
    trail = channel.texts()[-1]
    assert trail.count("submitted · tg:100") == 3 and "budget changed · tg:100 (by tg:7)" in trail


async def test_nonsense_budgets_are_refused_with_a_clear_answer(app, channel):
    for args in (
        ("set", "user", "8", "day", "-3"),
        ("set", "user", "8", "day", "lots"),
        ("set", "user", "8"),
    ):
        await app.runner.handle(ADMIN, CommandReceived("budget", args, ADMIN))
        assert "not an amount" in channel.texts()[-1] or "Usage (admins)" in channel.texts()[-1]
    assert await app.runner.spending.budgets.limits("user:tg:8") == {
        "day": 0.1,
        "month": None,
        "approval": None,
    }
    await app.runner.handle(CHAT, CommandReceived("budget", ("set", "user", str(CHAT), "day", "99"), CHAT))
    assert "Only admins" in channel.texts()[-1]


async def test_a_decision_cut_off_before_its_delivery_is_delivered_by_the_sweep_once(
    redis, channel, sandbox, tmp_path, write
):
    app = make_app(redis, channel, sandbox, tmp_path, approval_threshold=0.01)
    client = app.client
    try:
        await submit(app, write, "p.csv", "prompt\na\nb\n")
        state = await app.store.load(CHAT)
        assert state.phase == "awaiting_approval"
        approval_id = state.pending.approval_id
        spending = app.runner.spending
        # The admin's press was decided in Redis by a replica that died before delivering it.
        assert (await spending.approvals.decide(approval_id, "approved", "tg:7", "", now_ms())).won
        submits = sandbox.state.submits
        assert await spending.sweep(now=now_ms()) == 0  # not yet: that replica may still deliver
        assert await spending.sweep(now=now_ms() + REDELIVER_MS + 1) == 1
        assert sandbox.state.submits == submits + 1 and (await app.store.load(CHAT)).phase == "idle"
        # Delivered again (the sweep's own delivery cut short): the chat applies it once.
        await spending.deliver(await spending.approvals.get(approval_id))
        assert sandbox.state.submits == submits + 1
        assert await spending.sweep(now=now_ms() + 10 * REDELIVER_MS) == 0
        # A press on the decided approval is answered, and changes nothing.
        await app.runner.handle(ADMIN, CommandReceived("approve", (approval_id,), ADMIN))
        assert channel.texts()[-1] == f"Approval {approval_id} was approved by tg:7."
        assert sandbox.state.submits == submits + 1
    finally:
        await client.aclose()
