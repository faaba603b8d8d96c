"""PTB's requests on our connection pool (bot/telegram/request.py), against the fake Bot API
and against servers that refuse or stay silent: bodies as PTB's own request makes them,
errors as PTB's, and never the token in an error."""

from __future__ import annotations

import asyncio

import pytest
from telegram import Bot
from telegram.error import NetworkError, TimedOut
from telegram.request import HTTPXRequest

from bot.redact import redact_secrets
from bot.telegram.channel import TelegramChannel, never_sent
from bot.telegram.request import PooledRequest, telegram_request
from tests.batchjob.test_http_transport import read_request, serve
from tests.e2e.fake_telegram import TOKEN


def bot_on(base: str, file_base: str | None = None, **kw) -> Bot:  # type: ignore[no-untyped-def]
    redact_secrets(TOKEN)  # as the bot does before it makes its Bot: PTB logs its URLs
    return Bot(
        TOKEN,
        base_url=base,
        base_file_url=file_base or base,
        request=PooledRequest(connections=2, **kw),
        get_updates_request=PooledRequest(connections=1),
    )


async def test_messages_documents_and_downloads_reach_the_fake_bot_api(telegram, tmp_path):
    bot = bot_on(telegram.api_base, telegram.file_base)
    channel = TelegramChannel(bot)
    async with bot:
        assert (await bot.get_me()).username == "batchjob_test_bot"
        await channel.send_text("5", "héllo & =?", [[("Go", "go:1")]])
        name = 'rows "é" 1.csv'
        await channel.send_document("5", name, b"row,column\n1,a\n", caption="the rows")
        file_id = "doc-p.csv"
        telegram.files[file_id] = (b"prompt\nfox\n", 11)
        dest = await channel.download(file_id, tmp_path / "in.csv", 1 << 20)
    sent = telegram.messages[-1]
    assert (sent.chat_id, sent.text) == (5, "héllo & =?")
    assert telegram.documents[-1] == (5, name.replace('"', "%22"), b"row,column\n1,a\n")
    assert dest.read_bytes() == b"prompt\nfox\n"


async def test_a_call_without_files_goes_as_json_and_its_answer_is_read_as_ptb_reads_it():
    """The Bot API takes JSON bodies: the text goes as it is (no percent-encoding), the
    keyboard as an object; an answer that is not UTF-8 is still read (as PTB reads it)."""
    import json

    from tests.batchjob.test_http_transport import ok

    seen: list[tuple[bytes, bytes]] = []
    answer = b'{"ok": true, "result": {"message_id": 3, "note": "caf\xe9"}}'

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        seen.append(await read_request(reader))
        writer.write(ok(answer))
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    bot = bot_on(f"http://127.0.0.1:{port}/bot")
    await bot.request.initialize()
    try:
        mid = await TelegramChannel(bot, max_attempts=1).send_text(
            "5", "héllo & =?%\n你好", [[("Go", "go:1")]]
        )
    finally:
        await bot.request.shutdown()
        server.close()
    assert mid == 3
    head, body = seen[0]
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {
        "chat_id": 5,
        "text": "héllo & =?%\n你好",
        "reply_markup": {"inline_keyboard": [[{"text": "Go", "callback_data": "go:1"}]]},
    }


async def test_a_refused_connection_is_a_network_error_that_names_no_token():
    server, port = await serve(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    bot = bot_on(f"http://127.0.0.1:{port}/bot")
    await bot.request.initialize()
    with pytest.raises(NetworkError) as caught:
        await bot.send_message(chat_id=1, text="x")
    assert TOKEN not in str(caught.value) and TOKEN.split(":")[1] not in repr(caught.value)
    await bot.request.shutdown()


async def test_a_full_pool_times_out_as_never_sent_and_a_silent_server_as_maybe_sent():
    arrived, release = asyncio.Event(), asyncio.Event()

    async def handler(reader, writer):  # type: ignore[no-untyped-def]
        await read_request(reader)
        arrived.set()
        await release.wait()
        writer.close()

    server, port = await serve(handler)
    bot = bot_on(f"http://127.0.0.1:{port}/bot", pool_timeout=0.05, read_timeout=30)
    await bot.request.initialize()
    async with server:
        held = [asyncio.ensure_future(bot.send_message(chat_id=1, text="x")) for _ in range(2)]
        await arrived.wait()
        with pytest.raises(TimedOut) as full:
            await bot.send_message(chat_id=1, text="y")
        assert never_sent(full.value)
        held[0].cancel()  # a slot comes free: the next request leaves, and hears nothing
        with pytest.raises(TimedOut) as silent:
            await bot.send_message(chat_id=1, text="z", read_timeout=0.05, pool_timeout=5)
        assert not never_sent(silent.value)
        held[1].cancel()
        await asyncio.gather(*held, return_exceptions=True)
        release.set()
    await bot.request.shutdown()


def test_a_proxy_from_the_environment_keeps_ptbs_own_request(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = "https://api.telegram.org/bot"
    assert isinstance(telegram_request(url, connections=1), PooledRequest)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert isinstance(telegram_request(url, connections=1), HTTPXRequest)
    monkeypatch.setenv("NO_PROXY", "api.telegram.org")
    assert isinstance(telegram_request(url, connections=1), PooledRequest)
