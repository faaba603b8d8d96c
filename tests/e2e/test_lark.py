"""The Feishu/Lark bot (official SDK) against the fake Open Platform, the sandbox as BatchJob.

Events reach the bot the two ways Feishu sends them: encrypted and signed to the webhook,
and as frames on the SDK's long connection.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchjob.client import BatchJobClient, Timeouts
from bot.lark.app import LarkBot
from bot.lark.settings import LarkSettings
from conversation.settings import ConversationSettings
from tests.conftest import TOKEN as SANDBOX_TOKEN
from tests.e2e.conftest import until
from tests.e2e.fake_lark import (
    APP_ID,
    APP_SECRET,
    ENCRYPT_KEY,
    VERIFICATION_TOKEN,
    FakeLark,
    encrypt,
    signed_headers,
)
from tests.files import xlsx

ZH_USER, EN_USER, ADMIN = "ou_zh_user", "ou_en_user", "ou_admin"
HOOK = "/lark/events"


@pytest.fixture
def lark():
    fake = FakeLark().start()
    yield fake
    fake.stop()


def make_bot(lark, sandbox, redis, tmp_path, **overrides) -> LarkBot:
    settings = LarkSettings(
        lark_app_id=APP_ID,
        lark_app_secret=APP_SECRET,
        lark_domain=lark.url,
        lark_mode=overrides.pop("lark_mode", "webhook"),
        lark_encrypt_key=ENCRYPT_KEY,
        lark_verification_token=VERIFICATION_TOKEN,
        lark_flood_scale=1.0,  # the real limits: the fake counts breaches against them
        **overrides,
    )
    conv = ConversationSettings(
        media_dir=tmp_path / "media",
        admin_ids=frozenset({f"lark:{ADMIN}"}),
        poll_min_seconds=0.05,
        poll_max_seconds=0.2,
        progress_edit_seconds=0,
    )
    client = BatchJobClient(sandbox.url, SANDBOX_TOKEN, timeouts=Timeouts(read=2))
    return LarkBot(settings, conv, redis, client)


@pytest.fixture
async def bot(lark, sandbox, redis, tmp_path):
    b = make_bot(lark, sandbox, redis, tmp_path)
    await b.start()
    yield b
    await b.stop()
    await b.client.aclose()


@pytest.fixture
async def hook(bot):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bot.asgi()), base_url="http://bot") as c:

        async def deliver(body: dict, *, raw: bytes | None = None, headers: dict | None = None):
            raw = raw if raw is not None else encrypt(body)
            return await c.post(HOOK, content=raw, headers=headers or signed_headers(raw))

        yield deliver


def has(lark, chat, needle):
    return lambda: any(needle in t for t in lark.shown(chat))


async def test_zh_user_xlsx_to_summary_through_cards(bot, hook, lark, sandbox, tmp_path):
    """Report → estimate card → Submit button → one progress card updated in place → summary."""
    chat = "oc_zh_chat"
    sandbox.state.config.records_per_second = 3  # slow enough to show progress before the end
    path = xlsx(
        tmp_path / "提示词.xlsx", {"表1": [["提示词", "比例"], ["一只猫", "16:9"], ["一只狗", "1:1"]]}
    )
    r = await hook(lark.file_event(chat, ZH_USER, "提示词.xlsx", path.read_bytes()))
    assert r.status_code == 200
    await until(has(lark, chat, "预估费用"), what="estimate in Chinese")
    assert any("已检查文件" in t for t in lark.texts(f"{chat}"))
    submit = next(d for label, d in lark.buttons(chat) if label.startswith("提交"))
    r = await hook(lark.card_event(chat, ZH_USER, submit))
    assert r.status_code == 200 and r.json() == {}
    await until(has(lark, chat, "已结束"), what="summary")
    assert sandbox.state.submits == 1
    progress = [
        m
        for m in lark.messages
        if m.chat_id == chat
        and any(
            "█" in json.dumps(e, ensure_ascii=False) or "░" in json.dumps(e, ensure_ascii=False)
            for e in m.edits
        )
    ]
    assert len(progress) == 1 and progress[0].msg_type == "interactive" and len(progress[0].edits) >= 2
    assert sum("已结束" in t for t in lark.texts(chat)) == 1
    # → results: the summary card's 结果 button: one post of the images, then the files.
    results = next(d for label, d in lark.buttons(chat) if label == "结果")
    assert (await hook(lark.card_event(chat, ZH_USER, results))).status_code == 200
    files = lambda: [m for m in lark.messages if m.chat_id == chat and m.msg_type == "file"]  # noqa: E731
    await until(lambda: len(files()) == 3, what="results")
    (post,) = [m for m in lark.messages if m.chat_id == chat and m.msg_type == "post"]
    captions = [p[0]["text"] for p in post.content["zh_cn"]["content"] if p[0]["tag"] == "text"]
    assert captions == ["第 2 行：一只猫", "第 3 行：一只狗"] and len(lark.images) == 2
    assert [name.rsplit("-", 1)[-1] for name, _ in lark.uploads] == [
        "results.xlsx",
        "results.csv",
        "images.zip",
    ]
    assert [m.msg_type for m in lark.messages if m.chat_id == chat][-3:] == ["file", "file", "file"]
    assert lark.flood_breaches() == 0


async def test_url_verification_and_refused_deliveries(bot, hook, lark):
    challenge = {"challenge": "ch-123", "token": VERIFICATION_TOKEN, "type": "url_verification"}
    r = await hook(challenge)
    assert r.status_code == 200 and r.json() == {"challenge": "ch-123"}
    body = lark.text_event("oc_a", EN_USER, "/whoami")
    raw = encrypt(body)
    forged = dict(signed_headers(raw), **{"x-lark-signature": "0" * 64})
    assert (await hook(body, raw=raw, headers=forged)).status_code == 403
    wrong_key = encrypt(body, key="not-the-key")
    assert (await hook(body, raw=wrong_key, headers=signed_headers(wrong_key))).status_code == 403
    bad_token = lark.text_event("oc_a", EN_USER, "/whoami")
    bad_token["header"]["token"] = "someone-else"
    assert (await hook(bad_token)).status_code == 403
    unsigned = encrypt(lark.text_event("oc_a", EN_USER, "/whoami"))
    assert (await hook({}, raw=unsigned, headers={"content-type": "application/json"})).status_code == 403
    # Unencrypted but signed (the signature covers the encrypt key): taken, answered once.
    plain_body = lark.text_event("oc_b", EN_USER, "/whoami")
    plain = json.dumps(plain_body).encode()
    assert (await hook(plain_body, raw=plain, headers=signed_headers(plain))).status_code == 200
    await until(lambda: lark.texts("oc_b"), what="answer to the signed delivery")
    assert lark.texts("oc_a") == []  # nothing answered the refused ones


async def test_an_event_delivered_twice_is_handled_once(bot, hook, lark):
    body = lark.text_event("oc_b", EN_USER, "/whoami")
    assert (await hook(body)).status_code == 200
    assert (await hook(body)).status_code == 200  # Feishu's redelivery
    await until(lambda: lark.texts("oc_b"), what="answer")
    texts = lark.texts("oc_b")
    assert len(texts) == 1 and f"lark:{EN_USER}" in texts[0] and "lark:oc_b" in texts[0]


async def test_groups_need_a_mention_and_private_chats_get_a_hint(bot, hook, lark):
    group = "oc_group"
    await hook(lark.file_event(group, EN_USER, "p.csv", b"prompt\na cat\n", chat_type="group"))
    await hook(lark.text_event(group, EN_USER, "hello", chat_type="group"))
    assert lark.texts(group) == []  # not for the bot
    await hook(
        lark.file_event(group, EN_USER, "p.csv", b"prompt\na cat\n", chat_type="group", mention_bot=True)
    )
    await until(has(lark, group, "预估费用"), what="estimate in the group (a Feishu chat starts in Chinese)")
    await hook(lark.message_event("oc_p", EN_USER, "image", {"image_key": "img_1"}))
    await until(lambda: lark.texts("oc_p"), what="hint")
    assert "as a file message" in lark.texts("oc_p")[0] or "文件消息" in lark.texts("oc_p")[0]


async def test_a_rich_text_post_with_a_link_is_read_and_language_follows_it(bot, hook, lark):
    post = {
        "en_us": {"title": "", "content": [[{"tag": "a", "href": "http://127.0.0.1:9/p.csv", "text": "p"}]]}
    }
    await hook(lark.message_event("oc_post", EN_USER, "post", post))
    await until(lambda: lark.texts("oc_post"), what="answer to the link")
    # The link was taken as an input URL (refused here: loopback addresses are not fetched).
    assert any("address" in t.lower() or "url" in t.lower() for t in lark.texts("oc_post"))


async def test_frequency_limit_is_waited_out(bot, hook, lark):
    lark.rate_limit_next = 1
    await hook(lark.text_event("oc_c", EN_USER, "/help"))
    await until(lambda: lark.texts("oc_c"), what="answer after the limit")
    assert len(lark.texts("oc_c")) == 1


async def test_long_connection_delivers_events_and_acknowledges_them(lark, sandbox, redis, tmp_path):
    b = make_bot(lark, sandbox, redis, tmp_path, lark_mode="ws")
    await b.start()
    try:
        await until(lambda: lark.ws_queue is not None, what="long connection")
        lark.push_ws(lark.file_event("oc_ws", EN_USER, "p.csv", b"prompt\na cat\na dog\n"))
        await until(has(lark, "oc_ws", "预估费用"), what="estimate over the long connection")
        await until(lambda: lark.ws_acks, what="acknowledgement")
        assert lark.ws_acks == [200]
    finally:
        await b.stop()
        await b.client.aclose()


async def test_one_process_serves_both_channels_with_one_watcher(lark, sandbox, redis, tmp_path):
    """Telegram and Feishu chats in one process: one store and watcher; each job's messages go
    to the channel its chat belongs to."""
    from bot.channels import ChannelRouter
    from bot.telegram.app import TelegramBot
    from conversation.app import ConversationApp
    from tests.e2e.conftest import make_bot as make_tg_bot
    from tests.e2e.fake_telegram import FakeTelegram

    telegram = FakeTelegram().start()
    lk = make_bot(lark, sandbox, redis, tmp_path)
    tg_alone = make_tg_bot(telegram, sandbox, redis, tmp_path)
    router = ChannelRouter()
    shared = ConversationApp(redis, lk.client, router, lk.conv)
    tg = TelegramBot(tg_alone.tg, tg_alone.conv, redis, lk.client, app=shared)
    lk_shared = LarkBot(lk.settings, lk.conv, redis, lk.client, app=shared)
    router.add("tg", tg.channel)
    router.add("lark", lk_shared.channel)
    await tg.start()
    await lk_shared.start()
    shared.start_watcher()
    try:
        transport = httpx.ASGITransport(app=lk_shared.asgi())
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as c:
            body = encrypt(lark.file_event("oc_both", EN_USER, "p.csv", b"prompt\na cat\n"))
            assert (await c.post(HOOK, content=body, headers=signed_headers(body))).status_code == 200
            telegram.send_document(601, FakeTelegram.user(601, "en"), _csv(tmp_path))
            await until(has(lark, "oc_both", "预估费用"), what="Feishu estimate")
            await until(lambda: any("Estimate" in t for t in telegram.shown(601)), what="Telegram estimate")
            submit = next(d for label, d in lark.buttons("oc_both") if label.startswith("提交"))
            body = encrypt(lark.card_event("oc_both", EN_USER, submit))
            assert (await c.post(HOOK, content=body, headers=signed_headers(body))).status_code == 200
            telegram.send_text(601, FakeTelegram.user(601, "en"), "ok")
            await until(has(lark, "oc_both", "已结束"), what="Feishu summary")
            await until(lambda: any("finished" in t for t in telegram.shown(601)), what="Telegram summary")
        assert sandbox.state.submits == 2
        assert not any("已结束" in t or "finished" in t for t in telegram.texts(601) if "oc_" in t)
        assert all(m.chat_id == "oc_both" for m in lark.messages)  # nothing of Telegram's went to Feishu
    finally:
        await lk_shared.stop()
        await tg.stop()
        await shared.stop()
        await lk.channel.aclose()
        await lk.client.aclose()
        telegram.stop()


def _csv(tmp_path):
    path = tmp_path / "tg.csv"
    path.write_text("prompt\na dog\n")
    return path


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["im.message.receive_v1", "card.action.trigger", "other"]),
    event=_json,
    content=_json,
    message_type=st.sampled_from(["text", "post", "file", "image"]),
)
def test_any_event_body_becomes_an_event_or_silence(kind, event, content, message_type):
    """Bodies come from the network: whatever their shape, no exception."""
    from bot.lark.events import to_event

    body = {"header": {"event_id": "ev_1", "event_type": kind}, "event": event}
    to_event(body, "ou_bot", frozenset(), frozenset())
    if isinstance(event, dict) and isinstance(event.get("message"), dict):
        event["message"].update(content=json.dumps(content), message_type=message_type, chat_id="oc_1")
        event["message"].setdefault("message_id", "om_1")
        to_event(body, "ou_bot", frozenset(), frozenset())


async def test_en_xlsx_invalid_rows_then_valid_only(bot, hook, lark, sandbox, tmp_path):
    chat = "oc_en_rows"
    rows = [["prompt", "ratio"], ["fox", "16:9"], ["", "1:1"], ["owl", "7:7"]]
    path = xlsx(tmp_path / "p.xlsx", {"S": rows})
    await hook(lark.text_event(chat, EN_USER, "/lang en"))
    await hook(lark.file_event(chat, EN_USER, "p.xlsx", path.read_bytes()))
    await until(has(lark, chat, "2 rows are invalid"), what="row report")
    await hook(
        lark.card_event(chat, EN_USER, next(d for label, d in lark.buttons(chat) if "valid row" in label))
    )
    await until(has(lark, chat, "Estimate"))
    await hook(
        lark.card_event(
            chat, EN_USER, next(d for label, d in lark.buttons(chat) if label.startswith("Submit"))
        )
    )
    await until(has(lark, chat, "finished"))
    assert sum("finished" in t for t in lark.texts(chat)) == 1 and sandbox.state.submits == 1


async def test_admin_cancel_with_confirm_and_non_admin_refused(bot, hook, lark, sandbox):
    chat = "oc_cancel"
    sandbox.state.config.records_per_second = 0.2
    await hook(lark.text_event(chat, ADMIN, "/lang en"))
    await hook(lark.file_event(chat, ADMIN, "p.csv", b"prompt\na\nb\nc\n"))
    await until(has(lark, chat, "Estimate"))
    await hook(lark.text_event(chat, ADMIN, "ok"))
    await until(has(lark, chat, "submitted"))
    job_id = max(sandbox.state.jobs, key=lambda j: sandbox.state.jobs[j].created)
    await hook(lark.text_event(chat, EN_USER, f"/cancel {job_id}"))
    await until(has(lark, chat, "Only the person who submitted"))
    await hook(lark.text_event(chat, ADMIN, f"/cancel {job_id} too slow"))
    await until(has(lark, chat, f"Cancel job {job_id}?"))
    yes = next(d for label, d in lark.buttons(chat) if label.startswith("Yes"))
    await hook(lark.card_event(chat, EN_USER, yes))
    await until(lambda: sum("Only the person who submitted" in t for t in lark.texts(chat)) == 2)
    await hook(lark.card_event(chat, ADMIN, yes))
    await until(has(lark, chat, "finished: Cancelled"))
    assert sandbox.state.jobs[job_id].reason == "too slow"


async def test_a_file_over_the_limit_is_refused_and_a_recalled_card_is_gone(lark, sandbox, redis, tmp_path):
    from bot.lark.channel import LarkChannel
    from conversation.channel import DownloadError, MessageGone

    channel = LarkChannel(lark.url, APP_ID, APP_SECRET, max_attempts=1)
    try:
        body = lark.file_event("oc_big", EN_USER, "big.csv", b"prompt\n" + b"x\n" * 5000)
        message = body["event"]["message"]
        ref = f"lark:{message['message_id']}:{json.loads(message['content'])['file_key']}"
        with pytest.raises(DownloadError) as refused:
            await channel.download(ref, tmp_path / "big.csv", max_bytes=1000)
        assert refused.value.reason == "too_large" and not (tmp_path / "big.csv").exists()
        assert (await channel.download(ref, tmp_path / "ok.csv", max_bytes=1 << 20)).stat().st_size > 1000
        with pytest.raises(DownloadError):
            await channel.download("lark:om_1:../../etc/passwd", tmp_path / "x", max_bytes=1000)
        await channel.send_document("lark:oc_big", "row-errors.csv", b"row,column,problem\n")
        assert lark.uploads == [("row-errors.csv", b"row,column,problem\n")]
        assert lark.messages[-1].msg_type == "file" and lark.messages[-1].content == {
            "file_key": "file_up_0001"
        }
        mid = await channel.send_text("lark:oc_big", "progress", [[("Cancel", "j:cancel:1")]])
        lark.recalled.add(mid)
        with pytest.raises(MessageGone):
            await channel.edit_text("lark:oc_big", mid, "progress 2")
    finally:
        await channel.aclose()


async def test_an_event_held_by_a_live_handler_is_asked_again_and_handled_once_it_lapses(
    bot, hook, lark, redis
):
    body = lark.text_event("oc_held", EN_USER, "/whoami")
    update = bot.app.leases.k.update(f"lark:{body['header']['event_id']}", "lark:oc_held")
    await redis.set(update, "run:other", px=60_000)  # another replica has it (or died with it)
    assert (await hook(body)).status_code == 503  # not "ok": Feishu delivers it again
    assert lark.texts("oc_held") == []
    await redis.delete(update)  # that replica died: its lease lapsed
    assert (await hook(body)).status_code == 200
    await until(lambda: lark.texts("oc_held"), what="answer")
    assert (await hook(body)).status_code == 200 and len(lark.texts("oc_held")) == 1
    assert await redis.get(update) == b"done"


async def test_an_event_not_applied_within_feishus_3_seconds_is_answered_not_yet_and_not_lost(
    bot, hook, lark, monkeypatch
):
    """A chat busy past the answer time: "not yet" (Feishu delivers again), the work goes on."""
    from bot.lark import app as lark_app

    monkeypatch.setattr(lark_app, "ANSWER_WITHIN_S", 0.05)
    lock = bot.app.store.k.chat("lark:oc_slow", "lock")
    await bot.app.store.r.set(lock, "old-replica", px=60_000)  # a replica of the release before holds it
    assert (await hook(lark.text_event("oc_slow", EN_USER, "/whoami"))).status_code == 503
    await bot.app.store.r.delete(lock)
    await until(lambda: lark.texts("oc_slow"), what="answer once the chat is free")
    assert len(lark.texts("oc_slow")) == 1


async def test_refused_credentials_stop_the_start_with_one_line_and_no_secret(lark, sandbox, redis, tmp_path):
    from batchjob.settings import ConfigError
    from bot.main import _start_lark

    b = make_bot(lark, sandbox, redis, tmp_path, lark_mode="ws")
    b.settings = b.settings.model_copy(update={"lark_app_secret": "wrong-secret-value"})
    b.channel.token._body["app_secret"] = "wrong-secret-value"
    with pytest.raises(ConfigError) as refused:
        await _start_lark(b, b.settings, "en")
    message = str(refused.value)
    assert "refused the app's credentials" in message and "LARK_APP_SECRET" in message
    assert "wrong-secret-value" not in message and APP_SECRET not in message
    await b.channel.aclose()
    await b.client.aclose()


async def test_metrics_count_events_and_duplicates(bot, hook, lark):
    body = lark.text_event("oc_m", EN_USER, "/whoami")
    await hook(body)
    await hook(body)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bot.asgi()), base_url="http://bot") as c:
        text = (await c.get("/metrics")).text
        assert "batchjob_bot_lark_events_total 2" in text
        assert "batchjob_bot_lark_events_duplicate_total 1" in text
        assert (await c.get("/healthz")).json() == {"redis": True, "access": "open"}


async def test_restart_mid_watch_one_summary_over_the_long_connection(lark, sandbox, redis, tmp_path):
    chat = "oc_restart"
    sandbox.state.config.records_per_second = 2
    first = make_bot(lark, sandbox, redis, tmp_path, lark_mode="ws")
    await first.start()
    await until(lambda: lark.ws_queue is not None, what="long connection")
    lark.push_ws(lark.file_event(chat, EN_USER, "p.csv", b"prompt\na\nb\nc\nd\n"))
    await until(has(lark, chat, "预估费用"), what="estimate")
    submit = next(d for label, d in lark.buttons(chat) if label.startswith("提交"))
    lark.push_ws(lark.card_event(chat, EN_USER, submit))
    await until(has(lark, chat, "已提交"), what="submitted")
    await first.stop()  # the process goes away mid-watch
    await first.client.aclose()
    assert not any("已结束" in t for t in lark.texts(chat))
    second = make_bot(lark, sandbox, redis, tmp_path, lark_mode="ws")
    await second.start()
    try:
        await until(has(lark, chat, "已结束"), what="summary after the restart")
        assert sum("已结束" in t for t in lark.texts(chat)) == 1 and sandbox.state.submits == 1
        assert lark.ws_acks and set(lark.ws_acks) == {200}
    finally:
        await second.stop()
        await second.client.aclose()
