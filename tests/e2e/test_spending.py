"""Who may spend, through the fake Bot API and the sandbox: the access list, approvals of
large jobs (decided on another replica, rejected, expired) and a short balance recovered."""

from __future__ import annotations

import httpx
import pytest

from conversation.store import now_ms
from tests.e2e.conftest import ADMIN, make_bot, until
from tests.e2e.fake_telegram import FakeTelegram

USER = FakeTelegram.user(601)
ADMIN_USER = FakeTelegram.user(ADMIN)
HOOK = {"bot_webhook_url": "https://bot.example.com/tg/hook", "bot_webhook_secret": "s3cret-value"}
SECRET = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-value"}
# 60 records at 0.02 (fast) = 1.2 credits: above the threshold of 1.
ROWS = "prompt\n" + "".join(f"a cat, take {i}\n" for i in range(60))


def jobs_of(sandbox, filename):
    """Jobs made from our upload (the bot's service probe makes jobs of its own)."""
    files = sandbox.state.files
    return [j for j in list(sandbox.state.jobs.values()) if files[j.file_id].filename == filename]


def has(telegram, chat, needle):
    return lambda: any(needle in t for t in telegram.shown(chat))


@pytest.fixture
async def spend_bot(telegram, sandbox, redis, tmp_path):
    b = make_bot(telegram, sandbox, redis, tmp_path, {"approval_threshold": 1.0})
    await b.start()
    yield b
    await b.stop()
    await b.client.aclose()


async def test_outside_the_list_one_answer_with_the_ids_and_nothing_downloaded(
    telegram, sandbox, redis, tmp_path, write
):
    conv = {"allowed_users": "601", "allowed_chats": "-100500"}
    b = make_bot(telegram, sandbox, redis, tmp_path, conv)
    await b.start()
    try:
        stranger = FakeTelegram.user(602)
        telegram.send_document(602, stranger, write("p.csv", "prompt\na\n"))
        await until(has(telegram, 602, "not on the list"))
        [answer] = telegram.texts(602)
        assert "tg:602" in answer  # the ids to give the operator
        assert not any(c[0] == "getFile" for c in telegram.calls)  # nothing downloaded
        telegram.send_text(602, stranger, "/whoami")
        await until(lambda: len(telegram.texts(602)) == 2)
        assert "not on the list" in telegram.texts(602)[1]
        # A listed user, an admin, and anyone in a listed group get the bot.
        telegram.send_document(601, USER, write("p.csv", "prompt\na\n"))
        await until(has(telegram, 601, "Estimate"))
        telegram.send_text(ADMIN, ADMIN_USER, "/whoami")
        await until(has(telegram, ADMIN, f"tg:{ADMIN}"))
        telegram.send_text(-100500, stranger, "/whoami")
        await until(has(telegram, -100500, "tg:602"))
        assert not any("not on the list" in t for t in telegram.texts(-100500))
    finally:
        await b.stop()
        await b.client.aclose()


async def test_a_large_job_approved_by_an_admin_on_another_replica_is_submitted_once(
    telegram, sandbox, redis, tmp_path, write, spend_bot
):
    other = make_bot(telegram, sandbox, redis, tmp_path / "b", {"approval_threshold": 1.0}, **HOOK)
    await other.start()
    try:
        telegram.send_document(601, USER, write("approve-me.csv", ROWS), caption="fast")
        await until(has(telegram, 601, "waits for an admin"), what="the user told it waits")
        assert jobs_of(sandbox, "approve-me.jsonl") == []
        await until(has(telegram, ADMIN, "Approval asked"), what="the admin asked")
        [ask] = [t for t in telegram.texts(ADMIN) if "Approval asked" in t]
        assert "approve-me.csv" in ask and "60 records" in ask and "1.2 credits" in ask and "tg:601" in ask
        approve = next(d for label, d in telegram.buttons(ADMIN) if "Approve" in label)
        # Two presses at once, one on each replica: one approval, one job.
        press = telegram.callback(ADMIN, ADMIN_USER, approve)
        telegram.press(ADMIN, ADMIN_USER, approve)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=other.asgi()), base_url="http://b"
        ) as c:
            r = await c.post("/tg/hook", json={"update_id": 990001, **press}, headers=SECRET)
            assert r.status_code == 200
        await until(has(telegram, 601, "submitted (google"), what="the job submitted")
        await until(has(telegram, 601, "finished"), what="the summary")
        assert len(jobs_of(sandbox, "approve-me.jsonl")) == 1
        await until(lambda: any("Approved by tg:7" in label for label, _ in telegram.buttons(ADMIN)))
        await until(has(telegram, ADMIN, "was approved by tg:7"), what="the second press answered")
        audit = await spend_bot.app.runner.spending.audit.last(10)
        assert [e.kind for e in audit][:3] == ["submit", "approved", "approval_asked"]
        local = httpx.ASGITransport(app=other.asgi(), client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=local, base_url="http://b") as c:
            assert 'batchjob_bot_spend_month{user="tg:601"} 1.2' in (await c.get("/metrics")).text
    finally:
        await other.stop()
        await other.client.aclose()


async def test_a_rejection_with_a_reason_and_a_non_admins_press(telegram, sandbox, write, spend_bot):
    telegram.send_document(601, USER, write("rej.csv", ROWS), caption="fast")
    await until(has(telegram, ADMIN, "Approval asked"))
    reject = next(d for label, d in telegram.buttons(ADMIN) if "Reject" in label)
    telegram.press(601, USER, reject)  # the requester is no admin
    await until(has(telegram, 601, "Only an admin"))
    approval_id = reject.rsplit(":", 1)[1]
    telegram.send_text(ADMIN, ADMIN_USER, f"/reject {approval_id} over this week's plan")
    await until(has(telegram, 601, "Rejected by tg:7: over this week's plan"))
    assert jobs_of(sandbox, "rej.jsonl") == []
    await until(lambda: any("Rejected by tg:7" in label for label, _ in telegram.buttons(ADMIN)))


async def test_an_approval_nobody_gives_expires_and_the_user_is_told(telegram, sandbox, write, spend_bot):
    telegram.send_document(601, USER, write("exp.csv", ROWS), caption="fast")
    await until(has(telegram, ADMIN, "Approval asked"))
    approve = next(d for label, d in telegram.buttons(ADMIN) if "Approve" in label)
    spending = spend_bot.app.runner.spending
    assert await spending.sweep(now=now_ms()) == 0  # not yet
    assert await spending.sweep(now=now_ms() + 86_400_000 + 1) == 1  # a day later
    await until(has(telegram, 601, "request expired"))
    telegram.press(ADMIN, ADMIN_USER, approve)  # too late
    await until(has(telegram, ADMIN, "expired: nobody decided"))
    assert jobs_of(sandbox, "exp.jsonl") == []


async def test_a_402_with_a_top_up_link_then_check_again_after_the_balance_is_raised(
    telegram, sandbox, write, spend_bot
):
    sandbox.state.config.topup_url = "https://billing.example/top-up"
    telegram.send_document(601, USER, write("short.csv", "prompt\na\nb\n"))
    await until(has(telegram, 601, "Estimate"))
    sandbox.state.balance = 0.01  # spent elsewhere between the estimate and the confirmation
    telegram.send_text(601, USER, "ok")
    await until(has(telegram, 601, "short by 0.03"))
    labels = dict(telegram.buttons(601))
    assert labels["Top up"] == "https://billing.example/top-up"
    assert "Submit" not in str(labels)
    await until(has(telegram, ADMIN, "service balance is short"))
    # A second user short meanwhile: the admins are not told again.
    telegram.send_document(603, FakeTelegram.user(603), write("q.csv", "prompt\na\nb\nc\n"))
    await until(has(telegram, 603, "short by"))
    sandbox.state.balance = 100.0
    telegram.press(601, USER, labels["Check again"])
    await until(has(telegram, 601, "The balance is sufficient now."))
    assert jobs_of(sandbox, "short.jsonl") == []  # checked again: asked again, never submitted by itself
    assert sum("service balance is short" in t for t in telegram.texts(ADMIN)) == 1
    telegram.send_text(601, USER, "ok")
    await until(has(telegram, 601, "submitted (google"))
    assert len(jobs_of(sandbox, "short.jsonl")) == 1
