from __future__ import annotations

import asyncio

import pytest

from batchjob.client import BatchJobClient, Timeouts
from bot.telegram.app import TelegramBot
from bot.telegram.settings import TelegramSettings
from conversation.settings import ConversationSettings
from tests.conftest import TOKEN as SANDBOX_TOKEN
from tests.e2e.fake_telegram import TOKEN, FakeTelegram

ADMIN = 7


@pytest.fixture
def telegram():
    fake = FakeTelegram().start()
    yield fake
    fake.stop()


def make_bot(telegram, sandbox, redis, tmp_path, conv_overrides=None, **tg_overrides) -> TelegramBot:
    tg = TelegramSettings(
        telegram_bot_token=TOKEN,
        telegram_api_base_url=telegram.api_base,
        telegram_file_base_url=telegram.file_base,
        bot_flood_scale=0.01,
        **tg_overrides,
    )
    conv = ConversationSettings(
        media_dir=tmp_path / "media",
        admin_ids=frozenset({ADMIN}),
        poll_min_seconds=0.05,
        poll_max_seconds=0.2,
        progress_edit_seconds=0,
        unsafe_allow_loopback_urls=True,
        **(conv_overrides or {}),
    )
    client = BatchJobClient(sandbox.url, SANDBOX_TOKEN, timeouts=Timeouts(read=2))
    return TelegramBot(tg, conv, redis, client)


@pytest.fixture
async def bot(telegram, sandbox, redis, tmp_path):
    b = make_bot(telegram, sandbox, redis, tmp_path)
    await b.start()
    yield b
    await b.stop()
    await b.client.aclose()


async def until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Wait for a condition the bot brings about (polled, with a deadline; not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
