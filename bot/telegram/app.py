"""The Telegram bot: PTB Application for the Bot API, our conversation app for the rest.

Long polling by default. Webhook mode (BOT_WEBHOOK_URL + BOT_WEBHOOK_SECRET) is served by
our own ASGI app: it checks the secret header (403 otherwise), dedupes update_id in Redis,
processes the update, and answers 200 only once its state is committed. PTB's own
ConversationHandler, JobQueue and persistence are not used: state lives in Redis.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from telegram import BotCommand, Update
from telegram.ext import Application, ApplicationBuilder, TypeHandler

import locales
from batchjob.client import BatchJobClient
from bot.redact import redact_secrets
from bot.telegram.channel import TelegramChannel
from bot.telegram.flood import FloodControl
from bot.telegram.settings import TelegramSettings
from bot.telegram.updates import to_event
from conversation.app import ConversationApp
from conversation.settings import ConversationSettings

log = logging.getLogger("bot.telegram")

COMMANDS = ("start", "help", "template", "lang", "status", "jobs", "details", "drop", "cancel")


class TelegramBot:
    def __init__(
        self,
        tg: TelegramSettings,
        conv: ConversationSettings,
        redis: Redis,
        client: BatchJobClient,
    ) -> None:
        self.tg = tg
        self.conv = conv
        self.redis = redis
        self.client = client
        self.metrics: Counter[str] = Counter()
        redact_secrets(
            tg.telegram_bot_token.get_secret_value(),
            tg.bot_webhook_secret.get_secret_value() if tg.bot_webhook_secret else None,
        )
        builder: ApplicationBuilder = (
            ApplicationBuilder()
            .token(tg.telegram_bot_token.get_secret_value())
            .base_url(tg.telegram_api_base_url)
            .base_file_url(tg.telegram_file_base_url)
            # Each update's handler lives until its answers are sent, and answers queue for
            # the flood budget: with too few slots, later documents wait unread behind
            # handlers that only wait to send. Handlers are cheap; downloads are bounded.
            .concurrent_updates(1024)
            # Few connections suffice: sends are paced and downloads bounded, and the HTTP
            # pool's bookkeeping costs grow with the square of its connections.
            .connection_pool_size(32)
            .pool_timeout(10)
            .job_queue(None)
            .read_timeout(tg.telegram_timeout_seconds)
            .write_timeout(tg.telegram_timeout_seconds)
            .get_updates_read_timeout(tg.telegram_timeout_seconds + 10)
        )
        if tg.webhook:
            builder = builder.updater(None)
        self.ptb: Application = builder.build()
        self.channel = TelegramChannel(self.ptb.bot, FloodControl(redis, scale=tg.bot_flood_scale))
        self.app = ConversationApp(redis, client, self.channel, conv)
        self.ptb.add_handler(TypeHandler(Update, self._on_update))
        self.ptb.add_error_handler(self._on_error)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.ptb.initialize()
        await self._set_commands()
        await self.ptb.start()
        if self.tg.webhook:
            await self.ptb.bot.set_webhook(
                url=self.tg.bot_webhook_url,
                secret_token=self.tg.bot_webhook_secret.get_secret_value()
                if self.tg.bot_webhook_secret
                else None,
                allowed_updates=["message", "callback_query"],
            )
        else:
            await self.ptb.bot.delete_webhook()
            assert self.ptb.updater is not None
            await self.ptb.updater.start_polling(allowed_updates=["message", "callback_query"], timeout=10)
        self.app.start_watcher()

    async def stop(self) -> None:
        await self.app.stop()
        if self.ptb.updater is not None and self.ptb.updater.running:
            await self.ptb.updater.stop()
        if self.ptb.running:
            await self.ptb.stop()
        await self.ptb.shutdown()

    async def _set_commands(self) -> None:
        for lang, code in (("en", None), ("zh", "zh")):
            commands = [BotCommand(c, locales.t(lang, f"tg.cmd.{c}")) for c in COMMANDS]
            try:
                await self.ptb.bot.set_my_commands(commands, language_code=code)
            except Exception:
                log.warning("setMyCommands (%s) failed", lang)

    # --- updates -------------------------------------------------------------------------

    async def _on_update(self, update: Update, context: Any) -> None:
        await self.process(update)

    async def _on_error(self, update: object, context: Any) -> None:
        self.metrics["errors"] += 1
        log.error("update failed: %s", type(context.error).__name__, exc_info=context.error)

    async def process(self, update: Update) -> bool:
        """Handle one update once. Returns False for a duplicate."""
        self.metrics["updates"] += 1
        if not await self.app.store.first_time(update.update_id):
            self.metrics["updates_duplicate"] += 1
            return False
        try:
            incoming = to_event(
                update,
                self.ptb.bot.username or "",
                frozenset(self.conv.admin_ids),
                self.tg.telegram_download_limit,
            )
            if incoming is None:
                return True
            if incoming.callback_id:
                try:
                    await self.ptb.bot.answer_callback_query(incoming.callback_id)
                except Exception:
                    log.warning("answerCallbackQuery failed")
            if incoming.event is not None:
                await self.app.runner.handle(incoming.chat_id, incoming.event, client_lang=incoming.lang)
            elif incoming.hint and incoming.chat_id:
                lang = locales.normalize_language(incoming.lang)
                await self.channel.send_text(incoming.chat_id, locales.t(lang, incoming.hint))
        except BaseException:
            # Not committed: let Telegram's redelivery (or the next getUpdates) try again.
            await self.app.store.forget_update(update.update_id)
            raise
        return True

    # --- webhook server ------------------------------------------------------------------

    def asgi(self) -> Starlette:
        secret = self.tg.bot_webhook_secret.get_secret_value().encode() if self.tg.bot_webhook_secret else b""
        path = urlsplit(self.tg.bot_webhook_url or "/telegram/webhook").path or "/telegram/webhook"

        async def webhook(request: Request) -> Response:
            got = request.headers.get("x-telegram-bot-api-secret-token", "").encode()
            if not secret or not hmac.compare_digest(got, secret):
                return PlainTextResponse("forbidden", status_code=403)
            try:
                data = await request.json()
                update = Update.de_json(data, self.ptb.bot)
            except Exception:
                return PlainTextResponse("bad update", status_code=400)
            try:
                await self.process(update)
            except RedisError:
                return PlainTextResponse("storage unavailable", status_code=503)  # Telegram retries
            return PlainTextResponse("ok")

        async def healthz(request: Request) -> Response:
            checks = {}
            try:
                checks["redis"] = bool(await asyncio.wait_for(self.redis.ping(), 2))
            except Exception:
                checks["redis"] = False
            try:
                await asyncio.wait_for(self.client.list_jobs(page=1, page_size=1), 5)
                checks["batchjob"] = True
            except Exception:
                checks["batchjob"] = False
            return JSONResponse(checks, status_code=200 if all(checks.values()) else 503)

        async def metrics(request: Request) -> Response:
            return PlainTextResponse(await self.render_metrics(), media_type="text/plain; version=0.0.4")

        return Starlette(
            routes=[
                Route(path, webhook, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
            ]
        )

    async def render_metrics(self) -> str:
        lines = [
            "# TYPE batchjob_bot_updates_total counter",
            f"batchjob_bot_updates_total {self.metrics['updates']}",
            f"batchjob_bot_updates_duplicate_total {self.metrics['updates_duplicate']}",
            "# TYPE batchjob_bot_errors_total counter",
            f"batchjob_bot_errors_total {self.metrics['errors']}",
            "# TYPE batchjob_bot_polls_total counter",
            f"batchjob_bot_polls_total {self.app.watcher.polls}",
        ]
        try:
            lines.append("# TYPE batchjob_bot_jobs gauge")
            lines.append(f'batchjob_bot_jobs{{status="active"}} {await self.app.store.scheduled()}')
            for status, n in (await self.app.store.finished_counts()).items():
                lines.append(f'batchjob_bot_jobs{{status="{status}"}} {n}')
        except RedisError:
            lines.append("batchjob_bot_redis_up 0")
        return "\n".join(lines) + "\n"
