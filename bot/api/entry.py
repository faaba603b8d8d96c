"""`batchjob-bot --mcp`: the MCP server over stdio, in a process of its own."""

from __future__ import annotations

import os

import locales
from batchjob.settings import ConfigError


async def run_mcp() -> int:
    """The MCP server over stdio: the same store, checks, budgets and watcher as the bot."""
    from batchjob.client import BatchJobClient
    from batchjob.settings import load_service_settings
    from bot.api.server import Sender, attach, serve_stdio
    from bot.channels import ChannelRouter
    from bot.main import connect_redis, load_settings
    from conversation.app import ConversationApp
    from conversation.settings import ConversationSettings

    lang = locales.normalize_language(os.environ.get("LANG"))
    conv = load_settings(ConversationSettings, "BOT_")
    svc = load_service_settings()
    redis, _ = await connect_redis(lang)
    client = BatchJobClient(svc.base_url, svc.bearer_token.get_secret_value())
    router = ChannelRouter()
    app = ConversationApp(redis, client, router, conv)
    agents = attach(app, router)
    sender = Sender(agents)
    app.start_watcher()
    sender.start()
    try:
        await serve_stdio(agents, os.environ.get("BATCHJOB_BOT_API_KEY"))
    except PermissionError as e:
        raise ConfigError(str(e)) from None
    finally:
        await sender.stop()
        await app.stop()
        await client.aclose()
        await redis.aclose()
    return 0
