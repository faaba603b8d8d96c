"""Whole flows through the runner: real store, sandbox over HTTP, a recording channel."""

from __future__ import annotations

import asyncio
import http.server
import threading
from pathlib import Path

import pytest

from batchjob.client import BatchJobClient, Timeouts
from conversation import estimating
from conversation.app import ConversationApp
from conversation.events import ButtonPressed, CommandReceived, FileReceived, TextReceived
from conversation.settings import ConversationSettings
from conversation.submission import reconcile
from tests.batchjob.conftest import TOKEN
from tests.files import xlsx

CHAT = 100
ADMIN = 7


def make_app(redis, channel, sandbox, tmp_path, **overrides) -> ConversationApp:
    """The conversation app of these flows: fast polls, admin 7, the sandbox (overrides: settings)."""
    settings = ConversationSettings(
        media_dir=tmp_path / "media",
        admin_ids=frozenset({ADMIN}),
        poll_min_seconds=0.01,
        poll_max_seconds=0.05,
        progress_edit_seconds=0,
        **overrides,
    )
    client = BatchJobClient(sandbox.url, TOKEN, timeouts=Timeouts(read=1.0), backoff_base=0.01)
    return ConversationApp(redis, client, channel, settings)


@pytest.fixture
async def app(redis, channel, sandbox, tmp_path):
    (tmp_path / "inbox").mkdir()
    a = make_app(
        redis,
        channel,
        sandbox,
        tmp_path,
        local_path_roots=[tmp_path / "inbox"],
        unsafe_allow_loopback_urls=True,
    )
    yield a
    await a.client.aclose()


async def drain(app, timeout=60.0):
    """Run the watcher until no job is scheduled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await app.store.scheduled():
        assert loop.time() < deadline, "jobs still scheduled"
        if not await app.watcher.run_once():
            await asyncio.sleep(0.02)
    await app.watcher.settled()  # the last summary's task has ended too


def press(channel, label_part):
    for label, data in channel.last_buttons():
        if label_part in label:
            return ButtonPressed(data, ADMIN)
    raise AssertionError(f"no button {label_part!r} in {channel.last_buttons()}")


async def test_zh_user_csv_to_summary(app, channel, write, sandbox):
    src = write("p.csv", "提示词,比例\n一只猫,16:9\n一只狗,1:1\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", src.stat().st_size), client_lang="zh-hans")
    texts = "\n".join(channel.texts())
    assert "已检查文件" in texts and "预估费用" in texts and "模型：google/gemini-2.5-flash-image" in texts
    await app.runner.handle(CHAT, TextReceived("google/gemini-2.5-flash-image fast"), client_lang="zh-hans")
    await drain(app)
    summaries = [t for t in channel.texts() if "已结束" in t]
    assert len(summaries) == 1 and "已完成" in summaries[0]
    assert sandbox.state.submits == 1
    state = await app.store.load(CHAT)
    assert state.jobs == [] and len(state.recent) == 1 and state.pending is None
    assert list((Path(app.runner.media)).iterdir()) == []  # downloaded and converted files removed


async def test_invalid_rows_then_valid_only(app, channel, tmp_path, sandbox):
    path = xlsx(
        tmp_path / "p.xlsx", {"S": [["prompt", "ratio"], ["fox", "16:9"], ["", "1:1"], ["owl", "7:7"]]}
    )
    files_before = len(sandbox.state.files)
    await app.runner.handle(CHAT, FileReceived(str(path), "p.xlsx", path.stat().st_size), client_lang="en")
    assert len(sandbox.state.files) == files_before  # nothing uploaded before the user knows
    text = channel.texts()[-1]
    assert "2 rows are invalid" in text and "Row 3: the prompt is empty" in text and "Row 4" in text
    await app.runner.handle(CHAT, press(channel, "valid row"))
    assert len(sandbox.state.files) == files_before + 1
    assert "Uploaded: 1 record " in "\n".join(channel.texts())
    await app.runner.handle(CHAT, press(channel, "Submit"))
    await drain(app)
    assert sum("finished" in t for t in channel.texts()) == 1


class _FileServer:
    def __init__(self, directory: Path):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


async def test_too_large_then_url_then_estimate_only(app, channel, tmp_path, write, sandbox):
    served = tmp_path / "www"
    served.mkdir()
    (served / "p.csv").write_text("prompt\nfox\nowl\n")
    server = _FileServer(served)
    try:
        await app.runner.handle(CHAT, FileReceived("ref", "big.csv", 10**9, too_large=True), client_lang="en")
        assert "too large" in channel.texts()[-1] and "public URL" in channel.texts()[-1]
        assert "local path" in channel.texts()[-1]  # configured here
        await app.runner.handle(CHAT, TextReceived(server.url + "/p.csv"))
        assert "Estimate" in "\n".join(channel.texts())
        await app.runner.handle(CHAT, press(channel, "Estimate only"))
        assert "Estimate only" in channel.texts()[-1] and sandbox.state.submits == 0
    finally:
        server.close()


async def test_url_fetch_refuses_private_addresses_by_default(app, channel):
    app.runner.settings.unsafe_allow_loopback_urls = False
    await app.runner.handle(CHAT, TextReceived("http://127.0.0.1:1/p.csv"), client_lang="en")
    assert "not allowed" in channel.texts()[-1]


async def test_file_id_path(app, channel, write, sandbox):
    up = await app.client.upload(write("p.csv", "prompt\na\nb\nc\n"))  # uploaded elsewhere, no job yet
    await app.runner.handle(CHAT, TextReceived(up.file_id), client_lang="en")
    assert "was not uploaded through this bot" in channel.texts()[-1]  # no guess asked of the user
    assert (await app.store.load(CHAT)).phase == "idle" and sandbox.state.submits == 0
    # a job of the service on the same file (from the CLI, say) tells the count
    job = await app.client.submit(up.file_id, "google/gemini-2.5-flash-image", "fast")
    await app.runner.handle(CHAT, TextReceived(up.file_id))
    assert f"3 records, as job {job.job_id} on the same file reports" in channel.texts()[-1]
    assert "Estimate: 0.06 credits for 3 records" in channel.texts()[-1]
    await app.runner.handle(CHAT, TextReceived("ok"))
    await drain(app)
    assert sandbox.state.submits == 2
    # a file this bot uploaded: its own count, said so
    other = await app.client.upload(write("q.csv", "prompt\na\nb\n"))
    await app.store.remember_file(other.file_id, 2)
    await app.runner.handle(CHAT, TextReceived(other.file_id))
    assert "2 records, as counted when this bot uploaded it" in channel.texts()[-1]


async def test_local_path_inside_roots_only(app, channel, tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "p.csv").write_text("prompt\nfox\n")
    (tmp_path / "secret.csv").write_text("prompt\nsecret\n")
    (inbox / "link.csv").symlink_to(tmp_path / "secret.csv")
    for bad in (str(inbox / ".." / "secret.csv"), str(inbox / "link.csv"), "/etc/passwd", str(inbox)):
        await app.runner.handle(CHAT, TextReceived(f"MEDIA:{bad}"), client_lang="en")
        assert "not allowed" in channel.texts()[-1] or "readable file" in channel.texts()[-1], bad
    await app.runner.handle(CHAT, TextReceived(f"MEDIA:{inbox / 'p.csv'}"))
    assert "Estimate" in channel.texts()[-1]
    assert (inbox / "p.csv").exists()  # the original is never removed


async def test_lost_submit_reply_is_adopted_not_repeated(app, channel, write, sandbox):
    sandbox.state.config.drop_submit_replies = 1
    sandbox.state.config.drop_seconds = 2.0
    src = write("p.csv", "prompt\nfox\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", 10), client_lang="en")
    await app.runner.handle(CHAT, TextReceived("fast"))
    assert sandbox.state.submits == 1
    texts = "\n".join(channel.texts())
    assert "did not answer" in texts and "submitted" in texts
    state = await app.store.load(CHAT)
    assert len(state.jobs) == 1 and state.phase == "idle"
    await drain(app)
    assert sandbox.state.submits == 1 and sum("finished" in t for t in channel.texts()) == 1


async def test_insufficient_balance_shows_the_numbers(app, channel, write, sandbox):
    sandbox.state.balance = 0.01
    src = write("p.csv", "prompt\na\nb\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", 10), client_lang="en")
    assert "current 0.01, required 0.04, short by 0.03 credits" in channel.texts()[-2]
    # The admins hear of it once (this chat is an admin's), whoever else runs short meanwhile.
    assert "service balance is short" in channel.texts()[-1]
    assert "Submit" not in str(channel.last_buttons())  # nothing the service would refuse
    await app.runner.handle(CHAT, TextReceived("ok"))
    assert "short by 0.03 credits" in channel.texts()[-1] and sandbox.state.submits == 0
    assert (await app.store.load(CHAT)).phase == "awaiting_confirm"


async def test_admin_cancel_with_confirm_and_non_admin_refused(app, channel, write, sandbox):
    sandbox.state.config.records_per_second = 0.2
    src = write("p.csv", "prompt\na\nb\nc\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", 10), client_lang="en")
    await app.runner.handle(CHAT, TextReceived("ok"))
    job_id = (await app.store.load(CHAT)).jobs[0]
    await app.runner.handle(CHAT, CommandReceived("cancel", (job_id,), user_id=5))
    assert "Only the person who submitted" in channel.texts()[-1]
    await app.runner.handle(CHAT, CommandReceived("cancel", (job_id, "wrong", "file"), user_id=ADMIN))
    assert f"Cancel job {job_id}? Reason: wrong file" in channel.texts()[-1]
    await app.runner.handle(CHAT, ButtonPressed(f"k:y:{job_id}", user_id=5))
    assert "Only the person who submitted" in channel.texts()[-1]
    await app.runner.handle(CHAT, press(channel, "Yes"))
    assert "Cancelled" in channel.texts()[-1]
    assert sandbox.state.jobs[job_id].reason == "wrong file"
    await drain(app)
    assert sum("finished: Cancelled" in t for t in channel.texts()) == 1


async def test_details_only_on_request(app, channel, write, sandbox):
    # Row 3 is blank and row 4 invalid: the failed record (the service's index 1) is row 5.
    src = write("p.csv", "prompt,aspect_ratio\na,\n,\nbad,7:7\nb [fail] owl,\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", 10), client_lang="en")
    assert "Row 4" in channel.texts()[-1]  # the check names the same rows
    await app.runner.handle(CHAT, press(channel, "valid row"))
    await app.runner.handle(CHAT, TextReceived("ok"))
    await drain(app)
    job_id = (await app.store.load(CHAT)).recent[0]
    await app.runner.handle(CHAT, CommandReceived("details", (job_id,)))
    text = channel.texts()[-1]
    assert "1 of 2 records failed" in text and "Row 5 (b [fail] owl)" in text, text
    # A job this bot did not send has no map: the line of the file the service got.
    await app.store.r.hdel(app.store.k.job(job_id), "rows")
    await app.runner.handle(CHAT, CommandReceived("details", (job_id,)))
    assert "Line 2 of the file sent (b [fail] owl)" in channel.texts()[-1]


async def test_templates_and_language(app, channel):
    await app.runner.handle(CHAT, CommandReceived("lang", ("zh",)), client_lang="en")
    await app.runner.handle(CHAT, CommandReceived("template"), client_lang="en")
    assert "模板" in channel.texts()[-1]
    assert [d[1] for d in channel.documents] == [
        "prompts.csv",
        "prompts.xlsx",
        "prompts.jsonl",
        "guide-zh.md",
    ]


async def test_storage_outage_gives_a_localized_message(app, channel, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def down(*a, **k):
        raise RedisConnectionError("down")

    with monkeypatch.context() as m:  # storage back before the app's own teardown
        m.setattr(app.store.r, "execute_command", down)  # every command, scripts too
        await app.runner.handle(CHAT, TextReceived("hello"), client_lang="zh")
    assert channel.texts()[-1] == "机器人暂时不可用，请一分钟后再试。"


async def test_stale_media_files_are_swept(app):
    import os
    import time

    old, fresh = app.runner.media / "old.csv", app.runner.media / "fresh.csv"
    old.write_text("x")
    fresh.write_text("y")
    past = time.time() - app.runner.settings.pending_ttl_seconds - 3600
    os.utime(old, (past, past))
    assert app.runner.sweep_media() == 1
    assert not old.exists() and fresh.exists()


async def test_cleanup_removes_only_received_files(app, tmp_path):
    """A flow's cleanup (off the event loop) removes its files in the media folder, and
    nothing a path elsewhere names."""
    from conversation.events import Cleanup
    from conversation.state import ChatState

    mine, elsewhere = app.runner.media / "p.csv", tmp_path / "keep.csv"
    mine.write_text("x")
    elsewhere.write_text("y")
    gone = str(app.runner.media / "gone.csv")  # already removed: no error
    await app.runner.perform(str(CHAT), ChatState(), Cleanup((str(mine), str(elsewhere), gone)))
    assert not mine.exists() and elsewhere.exists()


async def test_reconcile_adopts_only_a_job_created_since_the_intent(app, write, sandbox):
    """An older job of the same file (submitted again on purpose) is not mistaken for the lost one."""
    up = await app.client.upload(write("p.csv", "prompt\nfox\n"))
    old = await app.client.submit(up.file_id)
    sandbox.state.jobs[old.job_id].created_at = "2020-01-01T00:00:00+00:00"  # long before the intent
    await app.store.intent_begin("i-new", CHAT, up.file_id)
    assert (await reconcile(app.store, app.client, "i-new", up.file_id)).job_id is None
    new = await app.client.submit(up.file_id)
    assert (await reconcile(app.store, app.client, "i-new", up.file_id)).job_id == new.job_id
    assert (await app.store.intent("i-new"))[b"job_id"].decode() == new.job_id


async def test_send_priorities_first_answer_answer_background(app, channel, write, sandbox, monkeypatch):
    """A shared send budget serves the first answer to each user action first, then further
    answers (among them the answer to a confirmation: that chat has heard back once already),
    then the watcher's summary and (after it) the final edit, then progress edits
    (bot/flood.py orders by this)."""
    from conversation.channel import ANSWER, BACKGROUND, FIRST_ANSWER, PROGRESS, SEND_PRIORITY

    seen: list[tuple[str, int]] = []
    send, edit = channel.send_text, channel.edit_text

    async def send_text(chat_id, text, buttons=None):
        seen.append((text.split()[0], SEND_PRIORITY.get()))
        return await send(chat_id, text, buttons)

    async def edit_text(chat_id, message_id, text, buttons=None):
        seen.append(("edit", SEND_PRIORITY.get()))
        return await edit(chat_id, message_id, text, buttons)

    channel.send_text, channel.edit_text = send_text, edit_text
    monkeypatch.setattr(estimating, "ONE_MESSAGE_ROWS", 0)  # the report first, then the estimate
    src = write("p.csv", "prompt\nfox\n")
    sandbox.state.config.records_per_second = 0.0001  # running when first polled: a progress edit
    # Each update is handled in its own task, as the Telegram application does.
    await asyncio.create_task(app.runner.handle(CHAT, FileReceived(str(src), "p.csv", src.stat().st_size)))
    await asyncio.create_task(app.runner.handle(CHAT, TextReceived("fast")))
    assert await app.watcher.run_once() == 1
    await app.watcher.settled()
    sandbox.state.config.records_per_second = 1000  # then it ends
    await drain(app)
    assert seen[:3] == [("Checked", FIRST_ANSWER), ("Uploaded:", ANSWER), ("Job", ANSWER)]
    *edits, summary, final = seen[3:]  # the progress edits, the summary, then the final edit
    assert summary == ("Job", BACKGROUND) and final == ("edit", BACKGROUND)  # awaited: before edits
    assert edits and all(e == ("edit", PROGRESS) for e in edits)  # progress takes what is left


async def test_status_without_an_id_after_the_job_ended_shows_it(app, channel, write, sandbox):
    src = write("p.csv", "prompt\nfox\n")
    await app.runner.handle(CHAT, FileReceived(str(src), "p.csv", src.stat().st_size, "fast"))
    await drain(app)
    job_id = (await app.store.load(CHAT)).recent[0]
    await app.runner.handle(CHAT, CommandReceived("status", (), 5))
    assert job_id in channel.texts()[-1] and "Completed" in channel.texts()[-1]  # not "no active jobs"


async def test_warm_up_loads_every_script_of_the_app_on_a_fresh_server(channel, sandbox, tmp_path):
    """A burst on a fresh or restarted server would otherwise find each script missing, every
    concurrent first caller loading it again; the warm-up at start loads them once."""
    from conversation.store import in_process_redis

    r = in_process_redis()  # a server of its own: fresh, no script loaded
    app = make_app(r, channel, sandbox, tmp_path)
    try:
        shas = list(r.registered_scripts)
        assert len(shas) >= 10  # the store's, the leases', the job records', the budgets'...
        assert not any(await r.script_exists(*shas))
        await app.warmed(timeout=3600)  # before the watcher: as a shared app is, channels not in yet
        assert all(await r.script_exists(*shas))
    finally:
        await app.client.aclose()
        await r.aclose()


async def test_warm_up_opens_the_connections_a_burst_starts_with(channel, sandbox, tmp_path):
    """A cold burst set up its first connections all at once while the first answers were
    due; they are opened at start instead, and stay in the pool for the burst."""
    from conversation.store import WARM_CONNECTIONS, in_process_redis

    r = in_process_redis()
    app = make_app(r, channel, sandbox, tmp_path)
    try:
        pool = r.connection_pool
        assert len(pool._available_connections) < WARM_CONNECTIONS
        await app.warm()
        idle = [c for c in pool._available_connections if c.is_connected]
        assert len(idle) >= WARM_CONNECTIONS  # opened, and back in the pool
    finally:
        await app.client.aclose()
        await r.aclose()


async def test_a_channel_waits_for_the_warm_up_but_not_for_a_redis_that_hangs(channel, sandbox, tmp_path):
    """Channels take their first events after the warm-up (`warmed`), bounded: a Redis that
    does not answer holds the start no longer than the timeout."""
    from conversation.store import in_process_redis

    r = in_process_redis()
    app = make_app(r, channel, sandbox, tmp_path)
    gate = asyncio.Event()
    app._warming = asyncio.create_task(gate.wait())
    try:
        waiting = asyncio.create_task(app.warmed(timeout=3600))
        await asyncio.wait({waiting}, timeout=0)
        assert not waiting.done()  # still warming: the channel waits
        gate.set()
        await waiting
        app._warming = asyncio.create_task(asyncio.Event().wait())  # never done
        await app.warmed(timeout=0.001)  # returns all the same
        assert not app._warming.done()
    finally:
        app._warming.cancel()
        await app.client.aclose()
        await r.aclose()


async def test_the_language_data_is_loaded_off_the_loop_while_the_first_file_is_read(
    app, channel, write, sandbox, monkeypatch
):
    """Babel's data for a language is loaded the first time an estimate is written in it
    (25-50 ms): in a thread while the first file is read, not on the loop after it."""
    import threading

    import locales
    from conversation import performing

    loaded_on: list[str] = []
    prepare = locales.prepare

    def recorded(lang: str) -> None:
        loaded_on.append(threading.current_thread().name)
        prepare(lang)

    monkeypatch.setattr(performing, "_preparing", set())
    monkeypatch.setattr(locales, "prepare", recorded)
    src = write("p.csv", "prompt\nfox\n")
    for chat in (CHAT, CHAT + 1):  # the second file finds it done or under way
        await app.runner.handle(chat, FileReceived(str(src), "p.csv", src.stat().st_size), client_lang="zh")
    assert len(loaded_on) == 1 and loaded_on[0] != threading.main_thread().name
    assert any("预估费用" in t for t in channel.texts())


async def test_a_warm_up_that_cannot_load_the_scripts_only_says_so(channel, sandbox, tmp_path, caplog):
    """A storage error at start (a cluster's are not all RedisErrors) is a warning with the
    error's class, not a task that dies unobserved: callers load a missing script anyway."""
    from redis.exceptions import RedisClusterException

    from conversation.store import in_process_redis

    r = in_process_redis()
    app = make_app(r, channel, sandbox, tmp_path)

    async def refused(script: str) -> str:
        raise RedisClusterException("slots moving")

    r.script_load = refused  # type: ignore[method-assign]
    try:
        with caplog.at_level("WARNING", logger="conversation.app"):
            await app.warm()
        assert "scripts not ready at start: RedisClusterException" in caplog.text
    finally:
        await app.client.aclose()
        await r.aclose()
