"""An update is done only when its event is applied: webhook answers, the long-polling
offset, and a health check that fails when Redis answers with errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.exceptions import ResponseError

from bot.telegram.polling import Poller
from tests.e2e.conftest import make_bot, until
from tests.e2e.fake_telegram import FakeTelegram

HOOK = {"bot_webhook_url": "https://bot.example.com/tg/hook", "bot_webhook_secret": "s3cret-value"}
SECRET = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-value"}


async def test_a_webhook_update_held_by_a_live_handler_is_asked_again_and_handled_once_it_lapses(
    telegram, sandbox, redis, tmp_path
):
    wh = make_bot(telegram, sandbox, redis, tmp_path, **HOOK)
    await wh.start()
    try:
        update = {"update_id": 901, "message": telegram._message(710, FakeTelegram.user(710), text="/help")}
        leases = wh.app.leases
        key = leases.k.update(901, 710)  # an update of a chat is leased in the chat's slot
        # Another replica took the update and is handling it (or died doing so).
        await redis.set(key, "run:other", px=60_000)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=wh.asgi()), base_url="http://bot"
        ) as c:
            r = await c.post("/tg/hook", json=update, headers=SECRET)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"  # not "ok": it may be lost
            assert telegram.texts(710) == []
            await redis.delete(key)  # that replica died: its lease lapsed
            r = await c.post("/tg/hook", json=update, headers=SECRET)
            assert r.status_code == 200 and len(telegram.texts(710)) == 1
            r = await c.post("/tg/hook", json=update, headers=SECRET)
            assert r.status_code == 200 and len(telegram.texts(710)) == 1  # done: a duplicate now
            assert await redis.get(key) == b"done"
    finally:
        await wh.stop()
        await wh.client.aclose()


async def test_a_webhook_body_that_is_not_an_update_is_refused_and_an_odd_one_is_silent(
    telegram, sandbox, redis, tmp_path
):
    """No JSON, no object or no integer update_id: 400 (nothing to claim). An update with an
    id and fields of another shape is taken (200) and answers nothing."""
    wh = make_bot(telegram, sandbox, redis, tmp_path, **HOOK)
    await wh.start()
    try:
        async with asgi_client(wh) as c:
            for body in (b"not json", b"[1]", b'{"update_id": "9"}', b'{"update_id": true}', b"\xff"):
                r = await c.post(
                    "/tg/hook", content=body, headers={**SECRET, "content-type": "application/json"}
                )
                assert r.status_code == 400, body
            odd = {"update_id": 902, "message": {"chat": {"id": "710"}, "text": 5}}
            assert (await c.post("/tg/hook", json=odd, headers=SECRET)).status_code == 200
            assert telegram.texts(710) == []
    finally:
        await wh.stop()
        await wh.client.aclose()


async def test_health_fails_when_redis_answers_with_errors(telegram, sandbox, redis, tmp_path, monkeypatch):
    wh = make_bot(telegram, sandbox, redis, tmp_path, **HOOK)
    await wh.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=wh.asgi()), base_url="http://bot"
        ) as c:
            assert (await c.get("/healthz")).status_code == 200
            real = redis.execute_command

            async def refusing(*args, **kw):
                # What a Redis that cannot persist answers to writes (it still answers PING).
                if str(args[0]).upper() == "SET":
                    raise ResponseError("MISCONF Redis is configured to save RDB snapshots")
                return await real(*args, **kw)

            monkeypatch.setattr(redis, "execute_command", refusing)
            assert await redis.ping()
            health = await c.get("/healthz")
            assert health.status_code == 503 and health.json()["redis"] is False
    finally:
        monkeypatch.undo()
        await wh.stop()
        await wh.client.aclose()


def asgi_client(bot) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=bot.asgi()), base_url="http://bot")


class FakeBot:
    """get_updates as Telegram serves it: updates at or past the offset, oldest first."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        self.offsets: list[int | None] = []
        self.calls = asyncio.Event()

    async def do_api_request(self, endpoint, api_kwargs=None, **kw):
        assert endpoint == "get_updates"
        offset = (api_kwargs or {}).get("offset")
        self.offsets.append(offset)
        self.calls.set()
        await asyncio.sleep(0)
        if len(self.offsets) > 1:
            await asyncio.sleep(0.01)  # a long poll with nothing new
        return [{"update_id": i} for i in self.ids if offset is None or i >= offset]


async def test_the_polling_offset_stays_at_the_oldest_update_not_yet_applied():
    bot = FakeBot([5, 6, 7])
    release = asyncio.Event()
    handled: list[int] = []
    poller: Poller

    async def process(uid, update):
        handled.append(uid)
        if uid == 6:
            await release.wait()  # being handled (downloading, say), not applied yet
        poller.mark_applied(uid)

    poller = Poller(bot, process, timeout=1)  # type: ignore[arg-type]
    poller.start(["message"])
    await until(lambda: len(bot.offsets) >= 4, what="several polls")
    assert bot.offsets[-1] == 6  # 5 and 7 are applied, 6 is not: Telegram keeps 6 and 7
    assert sorted(handled) == [5, 6, 7]  # each handled once, though 6 and 7 came back
    release.set()
    await until(lambda: bot.offsets[-1] == 8, what="the offset to move on")
    await poller.stop()


def applied_then_busy(bot: FakeBot) -> tuple[Poller, asyncio.Event]:
    """A poller whose updates are applied at once, then busy (an upload) until released."""
    release = asyncio.Event()
    poller: Poller

    async def process(uid, update):
        poller.mark_applied(uid)
        await release.wait()

    poller = Poller(bot, process, timeout=1)  # type: ignore[arg-type]
    return poller, release


async def test_an_applied_update_still_being_handled_does_not_hold_the_offset_back():
    """Applied, then busy for long (an upload): the offset passes it and stays past it, so
    the next updates come in while it works."""
    bot = FakeBot([5, 6, 7])
    poller, release = applied_then_busy(bot)
    poller.start(["message"])
    await until(lambda: bot.offsets[-1:] == [8], what="the offset to pass the applied updates")
    polls = len(bot.offsets)
    bot.ids.append(8)  # a new update arrives while 5-7 are still being handled
    await until(lambda: 8 in poller.handling and len(bot.offsets) > polls + 2, what="more polls")
    assert all(o is not None and o >= 8 for o in bot.offsets[polls:]), bot.offsets[polls:]
    release.set()
    await poller.stop()


async def test_an_update_whose_handling_failed_comes_again_a_few_times_at_most(monkeypatch):
    from bot.telegram import polling

    monkeypatch.setattr(polling, "MAX_ATTEMPTS", 3)
    bot = FakeBot([5, 6])  # 7 comes too
    tries: dict[int, int] = {}
    poller: Poller

    async def process(uid, update):
        tries[uid] = tries.get(uid, 0) + 1
        if uid == 5 and tries[uid] == 1:
            raise RuntimeError("storage hiccup")  # once: handled again when it comes again
        if uid == 6:
            raise RuntimeError("always")  # never: passed over after MAX_ATTEMPTS
        if uid == 7:
            return "done"  # a duplicate, applied before: not tried again
        poller.mark_applied(uid)

    bot.ids.append(7)
    poller = Poller(bot, process, timeout=1)  # type: ignore[arg-type]
    poller.start(["message"])
    await until(lambda: bot.offsets[-1:] == [8], what="the offset to pass them all")
    assert tries == {5: 2, 6: 3, 7: 1}
    await poller.stop()


async def test_a_poll_that_brings_nothing_new_waits_for_progress_and_unreadable_updates_pass(monkeypatch):
    """Updates in hand come back at once from every poll (the offset cannot pass them):
    polling waits for one to be applied instead of asking again and again. An update of an
    unexpected shape is handed on like the others (reading it is the handler's: it finds
    nothing to answer), never dropped by the poller nor holding the others up."""
    from bot.telegram import polling

    monkeypatch.setattr(polling, "NOTHING_NEW_WAIT_S", 600)  # only progress ends the wait
    bot = FakeBot([5, 6, 7])
    bot.raw = {6: {"update_id": 6, "message": "not an object"}}
    release = asyncio.Event()
    handled: list[int] = []
    poller: Poller

    async def process(uid, update):
        handled.append(uid)
        await release.wait()
        poller.mark_applied(uid)

    async def answer_at_once(endpoint, api_kwargs=None, **kw):  # the server answers at once
        offset = (api_kwargs or {}).get("offset")
        bot.offsets.append(offset)
        await asyncio.sleep(0)
        return [bot.raw.get(i, {"update_id": i}) for i in bot.ids if offset is None or i >= offset]

    bot.do_api_request = answer_at_once  # type: ignore[method-assign]
    poller = Poller(bot, process, timeout=1)  # type: ignore[arg-type]
    poller.start(["message"])
    await until(lambda: len(bot.offsets) >= 2, what="a second poll")
    for _ in range(1000):
        await asyncio.sleep(0)
    assert len(bot.offsets) == 2  # waiting for progress, not asking again
    assert sorted(handled) == [5, 6, 7]
    release.set()
    await until(lambda: bot.offsets[-1] == 8, what="the offset to move on")
    polls = len(bot.offsets)
    for _ in range(1000):  # empty answers that came back at once: no spinning on them either
        await asyncio.sleep(0)
    assert len(bot.offsets) == polls
    await poller.stop()


async def test_health_reports_the_service_probe_and_takes_it_again_after_a_failure(
    telegram, sandbox, redis, tmp_path
):
    """Answers in a shape the bot cannot read make the bot unhealthy, and saying why;
    once the service answers well again, the next check says so."""
    wh = make_bot(telegram, sandbox, redis, tmp_path, **HOOK)
    wh.probe.retry_s = wh.probe.max_age_s = 0  # take the probe again at every check
    sandbox.state.config.style = "camel"
    await wh.start()
    try:
        assert wh.probe.last is not None and wh.probe.last.ok  # camelCase is understood
        original = sandbox.state.config.token
        sandbox.state.config.token = "rotated"  # the bot's token no longer works
        await wh.probe.run()
        async with asgi_client(wh) as c:
            sandbox.state.config.token = original
            health = (await c.get("/healthz")).json()
        assert health["service_probe"] is True and health["probe"] == "ok"  # taken again: well
        sandbox.state.config.token = "rotated"
        async with asgi_client(wh) as c:
            health = await c.get("/healthz")
        assert health.status_code == 503 and health.json()["probe"] == "failed: list"
    finally:
        sandbox.state.config.token = original
        sandbox.state.config.style = "ours"
        await wh.stop()
        await wh.client.aclose()


async def test_metrics_answer_only_the_token_or_this_machine(telegram, sandbox, redis, tmp_path):
    wh = make_bot(telegram, sandbox, redis, tmp_path, **HOOK)
    open_bot = make_bot(telegram, sandbox, redis, tmp_path, bot_metrics_token="s3cr3t-token-value", **HOOK)
    try:
        remote = httpx.ASGITransport(app=wh.asgi(), client=("203.0.113.5", 40000))
        async with httpx.AsyncClient(transport=remote, base_url="http://bot") as c:
            assert (await c.get("/metrics")).status_code == 403  # no token: loopback only
        async with asgi_client(wh) as c:  # from 127.0.0.1
            assert (await c.get("/metrics")).status_code == 200
        remote = httpx.ASGITransport(app=open_bot.asgi(), client=("203.0.113.5", 40000))
        async with httpx.AsyncClient(transport=remote, base_url="http://bot") as c:
            assert (await c.get("/metrics")).status_code == 401
            auth = {"Authorization": "Bearer s3cr3t-token-value"}
            r = await c.get("/metrics", headers=auth)
            assert r.status_code == 200 and "batchjob_bot_updates_total" in r.text
    finally:
        for b in (wh, open_bot):
            await b.client.aclose()


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_stopping_while_progress_ends_a_wait_stops_polling(monkeypatch, steps):
    """A cancel that comes just as the wait for progress ends (`steps` loop steps after)
    must stop polling (on 3.11, wait_for could swallow it, and stopping waited for ever)."""
    from bot.telegram import polling

    monkeypatch.setattr(polling, "NOTHING_NEW_WAIT_S", 600)
    bot = FakeBot([5])
    release = asyncio.Event()

    async def process(uid, update):
        await release.wait()  # in hand, not applied: every poll brings it back

    async def answer_at_once(endpoint, api_kwargs=None, **kw):
        bot.offsets.append((api_kwargs or {}).get("offset"))
        await asyncio.sleep(0)
        return [{"update_id": 5}]

    bot.do_api_request = answer_at_once  # type: ignore[method-assign]
    poller = Poller(bot, process, timeout=1)  # type: ignore[arg-type]
    poller.start(["message"])
    await until(lambda: len(bot.offsets) >= 2, what="a poll that brought nothing new")
    for _ in range(10):
        await asyncio.sleep(0)  # the poller is waiting for progress
    poller._progress.set()
    for _ in range(steps):
        await asyncio.sleep(0)
    task = poller._task
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)  # bounded: a swallowed cancel polls on
    release.set()
    assert task in done and task.cancelled()
    await poller.stop()


class CountingDict(dict):
    """The poller's `handling`, counting how often a poll looks into it."""

    looks = 0

    def __contains__(self, key: object) -> bool:
        CountingDict.looks += 1
        return super().__contains__(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountingDict.looks += len(self)
        return super().__iter__()


async def test_a_poll_costs_the_same_with_a_thousand_updates_in_hand():
    """A burst leaves 1,000 updates applied and still being handled (at their uploads):
    working out the next offset does not look at all of them at every poll, and once
    their handling ends they are forgotten (the offset is past them)."""
    bot = FakeBot(list(range(1, 1001)))
    poller, release = applied_then_busy(bot)
    poller.handling = CountingDict()
    poller.start(["message"])
    await until(lambda: bot.offsets[-1:] == [1001], what="the offset to pass the applied updates")
    await until(lambda: len(poller.handling) == 1000, what="all 1,000 in hand")
    polls, CountingDict.looks = len(bot.offsets), 0
    await until(lambda: len(bot.offsets) >= polls + 20, what="20 more polls")
    assert CountingDict.looks <= 1000 * 2, CountingDict.looks  # once each at most; a scan a poll: 20,000
    release.set()
    await until(lambda: not poller.handling, what="the handling to end")
    assert bot.offsets[-1] == 1001 and not poller.applied
    await poller.stop()
