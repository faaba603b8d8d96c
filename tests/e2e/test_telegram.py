"""The real PTB Application against the fake Bot API server, with the sandbox as BatchJob."""

from __future__ import annotations

import http.server
import re
import threading

import httpx

from tests.e2e.conftest import ADMIN, make_bot, until
from tests.e2e.fake_telegram import FakeTelegram
from tests.files import xlsx

ZH = FakeTelegram.user(501, "zh-hans")
EN = FakeTelegram.user(502, "en")


def has(telegram, chat, needle):
    return lambda: any(needle in t for t in telegram.shown(chat))


def count(telegram, chat, needle):
    return sum(needle in t for t in telegram.texts(chat))


async def test_zh_user_csv_reply_model_mode_progress_one_summary(bot, telegram, sandbox, write):
    chat = 501
    sandbox.state.config.records_per_second = 3  # slow enough to show progress before the end
    telegram.send_document(
        chat, ZH, write("提示词.csv", "提示词,比例\n一只猫,16:9\n一只狗,1:1\n一只鸟,9:16\n")
    )
    await until(has(telegram, chat, "预估费用"), what="estimate in Chinese")
    assert any("已检查文件" in t for t in telegram.texts(chat))
    telegram.send_text(chat, ZH, "google/gemini-2.5-flash-image fast")
    await until(has(telegram, chat, "已结束"), what="summary")
    await until(lambda: sandbox.state.submits == 1)
    progress = [
        m for m in telegram.messages if m.chat_id == chat and any("░" in t or "█" in t for t in m.edits)
    ]
    # One message per job: it announces the job, then is edited to show its progress.
    assert len(progress) == 1 and "已提交" in progress[0].text and len(progress[0].edits) >= 2
    assert count(telegram, chat, "已结束") == 1
    methods = {c[0] for c in telegram.calls}
    assert {"getUpdates", "setMyCommands", "deleteWebhook"} <= methods
    zh_menu = [c for c in telegram.calls if c[0] == "setMyCommands" and c[1].get("language_code") == "zh"]
    assert zh_menu and any("模板" in cmd["description"] for cmd in zh_menu[0][1]["commands"])
    # /cancel is in the admins' own menus only (command scopes); everyone else's lacks it.
    menus = [
        (c[1].get("scope"), [cmd["command"] for cmd in c[1]["commands"]])
        for c in telegram.calls
        if c[0] == "setMyCommands"
    ]
    assert all("cancel" not in names for scope, names in menus if scope is None)
    admin_menus = [names for scope, names in menus if scope == {"type": "chat", "chat_id": ADMIN}]
    assert len(admin_menus) == 2 and all("cancel" in names for names in admin_menus)  # en and zh


async def test_en_xlsx_invalid_rows_then_valid_only(bot, telegram, sandbox, tmp_path):
    chat = 502
    path = xlsx(
        tmp_path / "p.xlsx", {"S": [["prompt", "ratio"], ["fox", "16:9"], ["", "1:1"], ["owl", "7:7"]]}
    )
    files_before = len(sandbox.state.files)
    telegram.send_document(chat, EN, path)
    await until(has(telegram, chat, "2 rows are invalid"), what="row report")
    assert len(sandbox.state.files) == files_before
    data = next(d for label, d in telegram.buttons(chat) if "valid row" in label)
    telegram.press(chat, EN, data)
    await until(has(telegram, chat, "Estimate"))
    data = next(d for label, d in telegram.buttons(chat) if label.startswith("Submit"))
    telegram.press(chat, EN, data)
    await until(has(telegram, chat, "finished"))
    assert count(telegram, chat, "finished") == 1 and sandbox.state.submits == 1


class _Files:
    def __init__(self, directory):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


async def test_too_large_then_url_then_estimate_only_and_file_id(bot, telegram, sandbox, tmp_path, write):
    chat = 503
    user = FakeTelegram.user(503)
    telegram.send_document(chat, user, write("big.csv", "prompt\nx\n"), declared_size=25 * 1024 * 1024)
    await until(has(telegram, chat, "public URL"), what="fallback")
    assert not any(c[0] == "getFile" for c in telegram.calls)  # size checked before getFile
    www = tmp_path / "www"
    www.mkdir()
    (www / "p.csv").write_text("prompt\nfox\nowl\n")
    files = _Files(www)
    try:
        telegram.send_text(chat, user, files.url + "/p.csv")
        await until(has(telegram, chat, "Estimate"))
    finally:
        files.httpd.shutdown()
    data = next(d for label, d in telegram.buttons(chat) if label == "Estimate only")
    telegram.press(chat, user, data)
    await until(has(telegram, chat, "Estimate only"))
    assert sandbox.state.submits == 0
    file_id = re.search(r"file_[0-9a-f]+", next(t for t in telegram.texts(chat) if "Uploaded" in t)).group()
    telegram.send_text(chat, user, file_id)  # uploaded by this bot: its count is known
    await until(lambda: count(telegram, chat, "Estimate:") == 2)
    telegram.send_text(chat, user, "ok")
    await until(has(telegram, chat, "finished"))
    assert sandbox.state.submits == 1


async def test_admin_cancel_with_confirm_and_non_admin_refused(bot, telegram, sandbox, write):
    chat = 504
    admin, other = FakeTelegram.user(ADMIN), FakeTelegram.user(8)
    sandbox.state.config.records_per_second = 0.2
    telegram.send_document(chat, admin, write("p.csv", "prompt\na\nb\nc\n"), caption="fast")
    await until(has(telegram, chat, "submitted"))
    job_id = next(
        j for j in sandbox.state.jobs if sandbox.state.jobs[j].file_id in {f for f in sandbox.state.files}
    )
    job_id = max(sandbox.state.jobs, key=lambda j: sandbox.state.jobs[j].created)
    telegram.send_text(chat, other, f"/cancel {job_id}")
    await until(has(telegram, chat, "Only the person who submitted"))
    telegram.send_text(chat, admin, f"/cancel@batchjob_test_bot {job_id} too slow")
    await until(has(telegram, chat, f"Cancel job {job_id}?"))
    yes = next(d for label, d in telegram.buttons(chat) if label.startswith("Yes"))
    telegram.press(chat, other, yes)
    await until(lambda: count(telegram, chat, "Only the person who submitted") == 2)
    telegram.press(chat, admin, yes)
    await until(has(telegram, chat, "is now Cancelled"))
    await until(has(telegram, chat, "finished: Cancelled"))
    assert sandbox.state.jobs[job_id].reason == "too slow"


async def test_429_and_not_modified_are_absorbed(bot, telegram, write):
    chat = 505
    user = FakeTelegram.user(505)
    telegram.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    telegram.send_text(chat, user, "/help")
    await until(has(telegram, chat, "/template"), what="help after a 429")
    # A second identical edit is answered "not modified" by the server and ignored by the bot.
    mid = await bot.channel.send_text(chat, "same")
    await bot.channel.edit_text(chat, mid, "new")
    await bot.channel.edit_text(chat, mid, "new")


async def test_unexpected_updates_never_crash(bot, telegram):
    chat = 506
    user = FakeTelegram.user(506)
    telegram._push(
        {
            "message": telegram._message(
                chat, user, photo=[{"file_id": "p", "file_unique_id": "pu", "width": 1, "height": 1}]
            )
        }
    )
    telegram._push({"edited_message": telegram._message(chat, user, text="edited")})
    telegram._push(
        {
            "channel_post": {
                "message_id": 1,
                "date": 1,
                "chat": {"id": -100, "type": "channel"},
                "text": "post",
            }
        }
    )
    telegram.press(chat, user, "forged:data:here")
    telegram.send_text(chat, user, "/help")
    await until(has(telegram, chat, "/template"))
    await until(has(telegram, chat, "as a document"))
    await until(has(telegram, chat, "no longer valid"))
    assert not any("edited" in t or "post" in t for t in telegram.texts())


async def test_group_commands_with_botname_and_privacy(bot, telegram):
    chat = -42
    user = FakeTelegram.user(601)
    telegram.send_text(chat, user, "just chatting")
    telegram.send_text(chat, user, "/help@other_bot")
    telegram.send_text(chat, user, "/help@batchjob_test_bot")
    await until(has(telegram, chat, "/template"))
    assert len(telegram.texts(chat)) == 1


async def test_webhook_dedupes_and_checks_the_secret(telegram, sandbox, redis, tmp_path):
    wh = make_bot(
        telegram,
        sandbox,
        redis,
        tmp_path,
        bot_webhook_url="https://bot.example.com/tg/hook",
        bot_webhook_secret="s3cret-value",
    )
    await wh.start()
    try:
        assert any(
            c[0] == "setWebhook" and c[1].get("secret_token") == "s3cret-value" for c in telegram.calls
        )
        app = wh.asgi()
        update = {"update_id": 777, "message": telegram._message(700, FakeTelegram.user(700), text="/help")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot") as c:
            r = await c.post("/tg/hook", json=update)
            assert r.status_code == 403
            r = await c.post("/tg/hook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"})
            assert r.status_code == 403
            assert telegram.texts(700) == []  # nothing processed
            for _ in range(2):
                r = await c.post(
                    "/tg/hook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-value"}
                )
                assert r.status_code == 200
            assert len(telegram.texts(700)) == 1  # answered once: state committed before the 200
            health = await c.get("/healthz")
            assert health.status_code == 200
            assert health.json() == {
                "redis": True,
                "batchjob": True,
                "service_probe": True,
                "probe": "ok",
                "access": "open",
            }
            metrics = (await c.get("/metrics")).text
            assert (
                "batchjob_bot_updates_total 2" in metrics
                and "batchjob_bot_updates_duplicate_total 1" in metrics
            )
    finally:
        await wh.stop()
        await wh.client.aclose()


async def test_restart_mid_watch_one_summary(telegram, sandbox, redis, tmp_path, write):
    chat = 510
    user = FakeTelegram.user(510)
    sandbox.state.config.records_per_second = 2
    first = make_bot(telegram, sandbox, redis, tmp_path)
    await first.start()
    telegram.send_document(chat, user, write("p.csv", "prompt\na\nb\nc\nd\n"), caption="fast")
    await until(has(telegram, chat, "submitted"))
    await first.stop()  # the process goes away mid-watch
    await first.client.aclose()
    assert count(telegram, chat, "finished") == 0
    second = make_bot(telegram, sandbox, redis, tmp_path)
    await second.start()
    try:
        await until(has(telegram, chat, "finished"))
        assert count(telegram, chat, "finished") == 1 and sandbox.state.submits == 1
    finally:
        await second.stop()
        await second.client.aclose()


async def test_telegram_5xx_on_getupdates_sendmessage_and_edits(bot, telegram, sandbox, write):
    """Bot API failures lose no update and never duplicate a summary."""
    chat = 520
    user = FakeTelegram.user(520)
    sandbox.state.config.records_per_second = 3
    telegram.fail("getUpdates", 502, "Bad Gateway", times=2)
    telegram.fail("editMessageText", 500, "Internal Server Error", times=2)
    telegram.send_document(chat, user, write("p.csv", "prompt\na\nb\nc\n"), caption="fast")
    telegram.send_text(chat, user, "/help")
    await until(has(telegram, chat, "finished"), what="summary despite Bot API errors")
    await until(has(telegram, chat, "/template"), what="the second update, not lost")
    telegram.fail("sendMessage", 500, "Internal Server Error", times=1)
    telegram.send_text(chat, user, "/status")  # its answer is lost to the 500 ...
    await until(lambda: not telegram.failures.get("sendMessage"), what="the failed answer")
    telegram.send_text(chat, user, "/jobs")  # ... the next update is still served
    await until(has(telegram, chat, "Page 1"), what="updates after a failed send")
    assert count(telegram, chat, "finished") == 1 and sandbox.state.submits == 1


async def test_telegram_timeouts_lose_no_update_and_repeat_no_summary(
    telegram, sandbox, redis, tmp_path, write
):
    """A Bot API call that times out may have arrived: updates are not lost (getUpdates keeps its
    offset) and a summary whose send timed out is not sent again."""
    chat = 530
    user = FakeTelegram.user(530)
    b = make_bot(telegram, sandbox, redis, tmp_path, telegram_timeout_seconds=0.5)
    await b.start()
    try:
        sandbox.state.config.records_per_second = 3
        telegram.send_document(chat, user, write("p.csv", "prompt\na\nb\nc\n"), caption="fast")
        await until(has(telegram, chat, "░"), what="the progress message")
        telegram.delay("getUpdates", 1.5, times=1)  # one long poll times out
        telegram.delay("sendMessage", 1.5, times=1)  # the next message (the summary) times out
        await until(has(telegram, chat, "finished"))
        telegram.send_text(chat, user, "/help")
        await until(has(telegram, chat, "/template"), what="an update after the timeouts")
        await until(lambda: b.app.store is not None and not telegram.delays.get("sendMessage"))
        assert count(telegram, chat, "finished") == 1 and sandbox.state.submits == 1
    finally:
        await b.stop()
        await b.client.aclose()


async def test_results_album_and_files_through_the_bot_api(bot, telegram, sandbox, write):
    """A finished job's Results button: sendMediaGroup (the images, captioned with the user's
    rows), then the XLSX, CSV and ZIP as documents; Failed rows lists the failures."""
    chat = 505
    user = FakeTelegram.user(505)
    sandbox.state.config.fail_marker = "[fail]"
    telegram.send_document(chat, user, write("p.csv", "prompt\na fox\nan owl\nbad [fail]\n"), caption="fast")
    await until(has(telegram, chat, "finished"), what="summary")
    buttons = dict(telegram.buttons(chat))
    assert set(buttons) == {"Results", "Failed rows", "Run failed rows again"}
    telegram.press(chat, user, buttons["Results"])
    await until(lambda: any(name.endswith("images.zip") for c, name, _ in telegram.documents if c == chat))
    ((album_chat, photos),) = telegram.albums
    assert album_chat == chat and [c for _, c in photos] == ["Row 2: a fox", "Row 3: an owl"]
    assert all(data.startswith(b"\x89PNG") for data, _ in photos)
    names = [name for c, name, _ in telegram.documents if c == chat]
    assert [n.rsplit("-", 1)[-1] for n in names] == ["results.xlsx", "results.csv", "images.zip"]
    telegram.press(chat, user, buttons["Failed rows"])
    await until(has(telegram, chat, "Row 4:"), what="failed rows")


async def test_results_given_as_links_and_failed_rows_run_again_through_the_bot_api(
    bot, telegram, sandbox, write
):
    """A service whose job names only its summary (image links): the album and the ZIP from
    the links. Then "Run failed rows again": a report and an estimate of exactly the failed
    rows, and a second job only after Submit."""
    chat = 506
    user = FakeTelegram.user(506)
    sandbox.state.config.fail_marker = "[fail]"
    sandbox.state.config.results_file = False
    telegram.send_document(chat, user, write("p.csv", "prompt\na fox\nbad [fail]\nan owl\n"), caption="fast")
    await until(has(telegram, chat, "finished"), what="summary")
    buttons = dict(telegram.buttons(chat))
    telegram.press(chat, user, buttons["Results"])
    await until(lambda: any(name.endswith("images.zip") for c, name, _ in telegram.documents if c == chat))
    ((_, photos),) = telegram.albums
    assert [c for _, c in photos] == ["Row 2: a fox", "Row 4: an owl"]
    submits = sandbox.state.submits
    telegram.press(chat, user, buttons["Run failed rows again"])
    await until(lambda: count(telegram, chat, "Estimate") == 2, what="estimate of the failed rows")
    assert sandbox.state.submits == submits  # not without the user's word
    assert any("1 row" in t for t in telegram.texts(chat)[-2:])
    submit = next(d for label, d in telegram.buttons(chat) if label.startswith("Submit"))
    telegram.press(chat, user, submit)
    await until(lambda: count(telegram, chat, "finished") == 2, what="the second job's summary")
    assert sandbox.state.submits == submits + 1
    newest = max(sandbox.state.jobs.values(), key=lambda j: j.created)
    assert newest.total == 1 and sandbox.state.files[newest.file_id].prompts == ["bad [fail]"]
