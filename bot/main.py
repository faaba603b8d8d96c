"""`batchjob-bot`: run the bot.

    batchjob-bot                         the Telegram bot (long polling, or webhook mode)
    batchjob-bot --channel lark|both     Feishu/Lark (long connection or webhook), or both
    batchjob-bot --console [--sandbox]   the conversation in this terminal (or a pipe)

Configuration comes from the environment (and `.env`): BATCHJOB_BASE_URL,
BATCHJOB_BEARER_TOKEN, REDIS_URL, BOT_ADMIN_IDS, BOT_MEDIA_DIR, BOT_LOCAL_PATH_ROOTS, ...
(see README). A missing or malformed value stops the start with one line naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

import locales
from batchjob import add_version_option, redaction, version
from batchjob.errors import ConfigError  # settings (pydantic) and asyncio wait: --help needs neither

log = logging.getLogger("bot")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="batchjob-bot",
        description="Chat front end for BatchJob batch image generation. Without --console it runs "
        "the bot on the channels --channel names (default: BOT_CHANNEL, else telegram). Telegram: long "
        "polling, or webhook mode when BOT_WEBHOOK_URL and BOT_WEBHOOK_SECRET are set. Feishu/Lark "
        "(LARK_APP_ID, LARK_APP_SECRET): long connection, or webhook mode with LARK_MODE=webhook. "
        "See README for every setting.",
        epilog="Console mode: type messages; '/file PATH [caption]' sends a file; buttons appear as "
        "numbered choices, answer with the number; /help lists the chat commands; '/wait' waits "
        "for submitted jobs to finish (for scripts). With stdin from a pipe the script runs to its "
        "end and the bot waits for submitted jobs to finish. "
        "--sandbox starts a local sandbox BatchJob server (development only) so that no account is "
        "needed. Without REDIS_URL an in-process store is used and state does not survive a restart.",
    )
    add_version_option(p)
    p.add_argument("--console", action="store_true", help="talk to the bot in this terminal")
    p.add_argument(
        "--channel",
        choices=("telegram", "lark", "both"),
        default=None,
        help="the chat channels to serve (default: $BOT_CHANNEL, else telegram); with both, one "
        "store, watcher and send budget per channel serve Telegram and Feishu/Lark chats",
    )
    p.add_argument(
        "--api",
        action="store_true",
        help="serve the agents' HTTP API (/v1/submissions) too; alone (no --channel): the API only, on "
        "BOT_LISTEN_HOST:BOT_LISTEN_PORT. Keys: batchjob-bot keys create|list|revoke",
    )
    p.add_argument(
        "--mcp",
        action="store_true",
        help="an MCP server on stdin/stdout for the agent that starts it (key: BATCHJOB_BOT_API_KEY, "
        "optional); MCP over HTTP is at /mcp of --api",
    )
    p.add_argument("--sandbox", action="store_true", help="run against an in-process sandbox BatchJob server")
    p.add_argument("--lang", choices=locales.LANGUAGES, default=None, help="console user's language")
    p.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for jobs after a piped script ends"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        from bot.api.keys_cli import main as keys_main

        return keys_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BOT_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        default = "none" if args.api else "telegram"
        channel = args.channel or os.environ.get("BOT_CHANNEL", default).strip().lower() or default
        if channel not in ("telegram", "lark", "both", "none"):
            raise ConfigError("BOT_CHANNEL: telegram, lark or both")
        import asyncio

        if not args.mcp:
            from bot.unused import keep_out

            keep_out()
        if args.mcp:
            from bot.api.entry import run_mcp

            return asyncio.run(run_mcp())
        if args.console:
            from bot.console import run as run_console

            return asyncio.run(run_console(args))
        return asyncio.run(run_bot(channel, args.api))
    except ConfigError as e:
        print(f"batchjob-bot: {redaction.redact(str(e))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # Never a traceback with a token in it: one line here, the details (redacted) in
        # the log at DEBUG.
        log.debug("stopped by an unexpected error", exc_info=True)
        lang = locales.normalize_language(os.environ.get("LANG"))
        detail = redaction.redact(f"{type(e).__name__}: {e}", 300)
        print(f"batchjob-bot: {locales.t(lang, 'start.unexpected', detail=detail)}", file=sys.stderr)
        return 70


async def connect_redis(lang: str):  # type: ignore[no-untyped-def]
    from redis.exceptions import RedisError

    from conversation.store import connect

    url = os.environ.get("REDIS_URL")
    try:
        return await connect(url)
    except (RedisError, OSError, ValueError) as e:
        where = redaction.url_without_credentials(url or "")
        detail = redaction.redact(str(e), 200)
        raise ConfigError(locales.t(lang, "start.redis_unreachable", url=where, detail=detail)) from None


async def _start_bot(bot, tg, lang: str) -> None:  # type: ignore[no-untyped-def]
    """Start the Telegram side; a refusal or an unreachable Bot API is one line that says what to fix."""
    from telegram.error import InvalidToken, NetworkError, TelegramError, TimedOut

    base = redaction.url_without_credentials(tg.telegram_api_base_url)
    # The library logs its own traceback of a refusal; the line below says it all.
    ptb_log = logging.getLogger("telegram")
    level = ptb_log.level
    ptb_log.setLevel(logging.CRITICAL)
    try:
        await bot.start()
    except InvalidToken:
        raise ConfigError(locales.t(lang, "start.token_refused", base=base)) from None
    except (NetworkError, TimedOut) as e:
        detail = redaction.redact(str(e), 200)
        raise ConfigError(locales.t(lang, "start.api_unreachable", base=base, detail=detail)) from None
    except TelegramError as e:
        detail = redaction.redact(str(e), 200)
        raise ConfigError(locales.t(lang, "start.api_refused", base=base, detail=detail)) from None
    finally:
        ptb_log.setLevel(level)


def _mode_line(lang: str, tg) -> str:  # type: ignore[no-untyped-def]
    if tg.webhook:
        return locales.t(lang, "start.mode_webhook", host=tg.bot_listen_host, port=tg.bot_listen_port)
    return locales.t(lang, "start.mode_polling")


def _lark_mode_line(lang: str, lk) -> str:  # type: ignore[no-untyped-def]
    if lk.lark_mode == "webhook":
        return locales.t(
            lang,
            "start.mode_lark_webhook",
            path=lk.lark_webhook_path,
            host=lk.bot_listen_host,
            port=lk.bot_listen_port,
        )
    return locales.t(lang, "start.mode_lark_ws", base=lk.base_url)


def _start_line(lang: str, mode: str, conv, base_url: str, redis, persistent: bool, app) -> str:  # type: ignore[no-untyped-def]
    """What runs, in one line: mode, Redis, service, admins, languages, replica."""
    from conversation.store import is_cluster_client

    where = redaction.url_without_credentials(os.environ.get("REDIS_URL", ""))
    store = (
        locales.t(lang, "start.redis_cluster" if is_cluster_client(redis) else "start.redis", url=where)
        if persistent
        else locales.t(lang, "start.redis_memory")
    )
    access = (
        locales.t(
            lang, "start.access_restricted", users=len(conv.allowed_users), chats=len(conv.allowed_chats)
        )
        if conv.restricted
        else locales.t(lang, "start.access_open")
    )
    running = locales.t(
        lang,
        "start.running",
        version=version(),
        mode=mode,
        store=store,
        service=redaction.url_without_credentials(base_url),
        admins=len(conv.admin_ids),
        languages=", ".join(locales.LANGUAGES),
        replica=app.leases.replica,
    )
    return f"{running} {access}"


def load_settings(cls, prefix: str, **overrides):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from batchjob.settings import describe

    try:
        return cls(**overrides)
    except ValidationError as e:
        raise ConfigError(describe(e, prefix)) from None


async def run_bot(channel: str = "telegram", api: bool = False) -> int:
    """The bot on `channel` (telegram, lark or both): one store, watcher and recovery for all.
    Telegram: long polling, or webhook mode when BOT_WEBHOOK_URL and BOT_WEBHOOK_SECRET are
    set. Feishu/Lark: long connection, or webhook mode with LARK_MODE=webhook."""
    import asyncio
    import signal

    from batchjob.client import BatchJobClient
    from batchjob.settings import load_service_settings
    from bot.redact import redact_secrets
    from conversation.settings import ConversationSettings

    lang = locales.normalize_language(os.environ.get("LANG"))
    use_tg, use_lark = channel in ("telegram", "both"), channel in ("lark", "both")
    tg = lk = None
    if use_tg:
        from bot.telegram.settings import TelegramSettings

        tg = load_settings(TelegramSettings, "")
        redact_secrets(tg.telegram_bot_token.get_secret_value())
    if use_lark:
        from bot.lark.settings import LarkSettings

        lk = load_settings(LarkSettings, "")
        redact_secrets(lk.lark_app_secret.get_secret_value())
    conv = load_settings(ConversationSettings, "BOT_")
    svc = load_service_settings()
    redact_secrets(svc.bearer_token.get_secret_value())
    redis, persistent = await connect_redis(lang)
    if not persistent:
        log.warning("REDIS_URL is not set: state lives in this process and is lost on restart")
    client = BatchJobClient(svc.base_url, svc.bearer_token.get_secret_value())
    shared = agents = sender = None
    if (use_tg and use_lark) or api:
        from bot.channels import ChannelRouter
        from conversation.app import ConversationApp

        router = ChannelRouter()
        shared = ConversationApp(redis, client, router, conv)
        if api:
            from bot.api.server import Sender, attach

            agents = attach(shared, router)
            sender = Sender(agents)
    bots: list = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if shared is not None:  # its watcher starts once the channels are in; its warm-up now
            await shared.warmed()
        if tg is not None:
            from bot.telegram.app import TelegramBot

            bots.append(TelegramBot(tg, conv, redis, client, app=shared))
            await _start_bot(bots[-1], tg, lang)
        if lk is not None:
            from bot.lark.app import LarkBot

            bots.append(LarkBot(lk, conv, redis, client, app=shared))
            await _start_lark(bots[-1], lk, lang)
        if shared is not None:
            if tg is not None:
                router.add("tg", bots[0].channel)
            if lk is not None:
                router.add("lark", bots[-1].channel)
            if len(bots) == 2:
                bots[0].more_metrics.append(bots[1].metric_lines)
            shared.start_watcher()
        if sender is not None:
            sender.start()
    except ConfigError:
        for bot in bots:
            with contextlib.suppress(Exception):
                await bot.stop()
        await client.aclose()
        await redis.aclose()
        raise
    app = bots[0].app if bots else shared
    modes = [_mode_line(lang, tg)] if tg is not None else []
    modes += [_lark_mode_line(lang, lk)] if lk is not None else []
    if api:
        modes.append(locales.t(lang, "start.mode_api", host=conv.listen_host, port=conv.listen_port))
    line = _start_line(lang, " + ".join(modes), conv, svc.base_url, redis, persistent, app)
    print(f"batchjob-bot: {line}", file=sys.stderr)
    from bot.heap import settle_heap

    quiet = settle_heap()
    try:
        # Webhooks need the server; otherwise it serves /healthz and /metrics when
        # BOT_LISTEN_PORT is set.
        webhook = (tg is not None and tg.webhook) or (lk is not None and lk.lark_mode == "webhook")
        if webhook or api or os.environ.get("BOT_LISTEN_PORT"):
            import uvicorn

            from bot.api.server import api_routes, standalone

            lark_bot = bots[-1] if lk is not None else None
            extra = api_routes(agents) if agents is not None else []
            if tg is not None:
                extra += [lark_bot.webhook_route()] if lark_bot and lk.lark_mode == "webhook" else []
                asgi, host, port = bots[0].asgi(extra), tg.bot_listen_host, tg.bot_listen_port
            elif lark_bot is not None:
                asgi, host, port = lark_bot.asgi(extra), lk.bot_listen_host, lk.bot_listen_port
            else:
                asgi, host, port = standalone(agents), conv.listen_host, conv.listen_port
            server = uvicorn.Server(
                uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False)
            )
            serving = asyncio.create_task(server.serve())
            await stop.wait()
            server.should_exit = True
            await serving
        else:
            await stop.wait()
    finally:
        if quiet is not None:
            quiet.stop()
        if sender is not None:
            await sender.stop()
        for bot in bots:
            await bot.stop()
        if shared is not None:
            await shared.stop()
        await client.aclose()
        await redis.aclose()
    return 0


async def _start_lark(bot, lk, lang: str) -> None:  # type: ignore[no-untyped-def]
    """Start the Feishu/Lark side; refused credentials or an unreachable platform is one line."""
    import httpx

    from bot.lark.channel import LarkError

    try:
        await bot.start()
    except LarkError as e:
        detail = redaction.redact(str(e), 200)
        raise ConfigError(locales.t(lang, "start.lark_refused", base=lk.base_url, detail=detail)) from None
    except (httpx.HTTPError, OSError) as e:
        detail = redaction.redact(f"{type(e).__name__}: {e}", 200)
        message = locales.t(lang, "start.lark_unreachable", base=lk.base_url, detail=detail)
        raise ConfigError(message) from None


if __name__ == "__main__":
    sys.exit(main())
