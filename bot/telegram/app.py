"""The Telegram bot: PTB's Bot for the Bot API, our conversation app for the rest.

Long polling by default. Webhook mode (BOT_WEBHOOK_URL + BOT_WEBHOOK_SECRET) is served by
our own ASGI app: it checks the secret header (403 otherwise), dedupes update_id in Redis,
processes the update, and answers 200 only once its state is committed. PTB's own
ConversationHandler, JobQueue and persistence are not used: state lives in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from telegram import Bot, BotCommand, BotCommandScopeChat

import locales
from batchjob import doctor
from batchjob.client import BatchJobClient
from bot.flood import FloodControl
from bot.metrics import endpoint, spend_lines
from bot.redact import redact_secrets
from bot.telegram.channel import TelegramChannel
from bot.telegram.polling import Poller
from bot.telegram.request import telegram_request
from bot.telegram.settings import TelegramSettings
from bot.telegram.updates import Incoming, to_event
from conversation.app import ConversationApp, keys_for
from conversation.identity import TELEGRAM, channel_of, native
from conversation.leases import Claim
from conversation.settings import ConversationSettings

if TYPE_CHECKING:  # the server is imported only in webhook mode or when one is served
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

log = logging.getLogger("bot.telegram")

ALLOWED_UPDATES = ["message", "callback_query"]
COMMANDS = (
    "start",
    "help",
    "template",
    "lang",
    "status",
    "jobs",
    "details",
    "results",
    "drop",
    "again",
    "whoami",
    "budget",
    "cancel",
    "watch",
    "approve",
    "reject",
    "audit",
)
ADMIN_ONLY = frozenset({"cancel", "watch", "approve", "reject", "audit"})  # in admins' menus only


class TelegramBot:
    def __init__(
        self,
        tg: TelegramSettings,
        conv: ConversationSettings,
        redis: Redis,
        client: BatchJobClient,
        *,
        app: ConversationApp | None = None,
    ) -> None:
        """`app`: a conversation app shared with another channel (its watcher and
        recovery are run by whoever made it); by default the bot has its own."""
        self.tg = tg
        self.conv = conv
        self.redis = redis
        self.client = client
        self.metrics: Counter[str] = Counter()
        redact_secrets(
            tg.telegram_bot_token.get_secret_value(),
            tg.bot_webhook_secret.get_secret_value() if tg.bot_webhook_secret else None,
            tg.bot_metrics_token.get_secret_value() if tg.bot_metrics_token else None,
        )
        # A plain Bot: updates come from our own poller (bot/telegram/polling.py) or the
        # webhook, so PTB's Application (handlers, job queue, updater) has nothing to do here.
        timeout = tg.telegram_timeout_seconds
        self.bot = Bot(
            tg.telegram_bot_token.get_secret_value(),
            base_url=tg.telegram_api_base_url,
            base_file_url=tg.telegram_file_base_url,
            # Few connections suffice: sends are paced and downloads bounded, and the HTTP
            # pool's bookkeeping costs grow with the square of its connections.
            request=telegram_request(
                tg.telegram_api_base_url,
                connections=32,
                pool_timeout=10,
                read_timeout=timeout,
                write_timeout=timeout,
            ),
            # The long poll has a connection of its own, so sends never wait behind it.
            get_updates_request=telegram_request(
                tg.telegram_api_base_url, connections=1, read_timeout=timeout + 10
            ),
        )
        self.flood = FloodControl(redis, scale=tg.bot_flood_scale, keys=keys_for(conv))
        self.channel = TelegramChannel(self.bot, self.flood)
        self.owns_app = app is None
        self.app = app or ConversationApp(redis, client, self.channel, conv)
        self.probe = doctor.Probe(client)
        self.more_metrics: list[Callable[[], list[str]]] = []
        self.poller = Poller(self.bot, self.process, timeout=timeout)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.bot.initialize()  # getMe: a refused token stops the start here
        await self._set_commands()
        if self.owns_app:
            self.app.start_watcher()
            await self.app.warmed()
        if self.tg.webhook:
            await self.bot.set_webhook(
                url=self.tg.bot_webhook_url,
                secret_token=self.tg.bot_webhook_secret.get_secret_value()
                if self.tg.bot_webhook_secret
                else None,
                allowed_updates=ALLOWED_UPDATES,
            )
        else:
            await self.bot.delete_webhook()
            self.poller.start(ALLOWED_UPDATES)
        await self._probe_service()

    async def _probe_service(self) -> None:
        """`batchjob doctor`'s probe, once at start: one log line per finding."""
        diagnosis = await self.probe.run()
        if diagnosis is None:
            return
        for line in doctor.log_lines(diagnosis):
            log.log(logging.INFO if diagnosis.ok else logging.WARNING, "%s", line)
        if not diagnosis.ok:
            log.warning(
                "the BatchJob service cannot be used as it answers; run `batchjob doctor` for details"
            )

    async def stop(self) -> None:
        await self.poller.stop()
        if self.owns_app:
            await self.app.stop()
        with contextlib.suppress(Exception):  # unrecorded, they lapse on their own
            await self.flood.flush()
        await self.bot.shutdown()

    async def _set_commands(self) -> None:
        """Menus in English and Chinese; /cancel only in admins' own chats (others cancel
        their own jobs with the job's button)."""
        everyone = [c for c in COMMANDS if c not in ADMIN_ONLY]
        scopes: list[tuple[list[str], Any]] = [(everyone, None)]
        admins = sorted(int(native(a)) for a in self.conv.admin_ids if channel_of(a) == TELEGRAM)
        scopes += [(list(COMMANDS), BotCommandScopeChat(admin)) for admin in admins]
        for names, scope in scopes:
            for lang, code in (("en", None), ("zh", "zh")):
                commands = [BotCommand(c, locales.t(lang, f"tg.cmd.{c}")) for c in names]
                try:
                    await self.bot.set_my_commands(commands, scope=scope, language_code=code)
                except Exception:
                    log.warning("setMyCommands (%s) failed", lang)

    # --- updates -------------------------------------------------------------------------

    async def process(self, update_id: int, update: dict[str, Any]) -> Claim:
        """Handle one update once: "new" when handled here, "done" for a duplicate, "busy"
        while another live handler has it (its delivery should be tried again later).

        The update is leased while it is handled and becomes done once its event is applied
        to the chat's state (what is left to do is then in Redis, for any replica); a handler
        killed before that leaves a lease that lapses, and a redelivery is handled again.
        """
        self.metrics["updates"] += 1
        incoming = to_event(
            update,
            self.bot.username or "",
            frozenset(self.conv.admin_ids),
            self.tg.telegram_download_limit,
        )
        # An update of a chat is leased in the chat's slot: the write that applies its event
        # marks it done too. The claim lists the chat as worked on here in the same trip.
        chat = incoming.chat_id if incoming is not None and incoming.chat_id else None
        async with self.app.runner.claimed(update_id, chat) as claim:
            if claim != "new":
                self.metrics[f"updates_{'duplicate' if claim == 'done' else 'busy'}"] += 1
                return claim
            await self._handle_claimed(update_id, incoming, chat)
        return "new"

    async def _handle_claimed(self, update_id: int, incoming: Incoming | None, chat: str | None) -> None:
        leases = self.app.leases
        applied = False

        async def applied_here() -> None:
            nonlocal applied
            applied = True
            self.poller.mark_applied(update_id)

        try:
            if incoming is not None and incoming.callback_id:
                try:
                    await self.bot.answer_callback_query(incoming.callback_id)
                except Exception:
                    log.warning("answerCallbackQuery failed")
            if incoming is not None and incoming.event is not None:
                await self.app.runner.handle(
                    incoming.chat_id,
                    incoming.event,
                    client_lang=incoming.lang,
                    event_id=f"tg:{update_id}",
                    on_applied=applied_here,
                    update_key=leases.k.update(update_id, chat),
                    listed=bool(chat),
                )
            elif incoming is not None and incoming.hint and incoming.chat_id:
                lang = locales.normalize_language(incoming.lang)
                await self.channel.send_text(incoming.chat_id, locales.t(lang, incoming.hint))
            if not applied:
                await leases.update_done(update_id, chat)
                await applied_here()
        except BaseException:
            if not applied:
                # Not applied: let Telegram's redelivery (or the next getUpdates) try again.
                with contextlib.suppress(RedisError):
                    await leases.release_update(update_id, chat)
            raise

    # --- webhook server ------------------------------------------------------------------

    def asgi(self, extra_routes: list[Route] | None = None) -> Starlette:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        secret = self.tg.bot_webhook_secret.get_secret_value().encode() if self.tg.bot_webhook_secret else b""
        path = urlsplit(self.tg.bot_webhook_url or "/telegram/webhook").path or "/telegram/webhook"

        async def webhook(request: Request) -> Response:
            got = request.headers.get("x-telegram-bot-api-secret-token", "").encode()
            if not secret or not hmac.compare_digest(got, secret):
                return PlainTextResponse("forbidden", status_code=403)
            try:
                data = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                data = None
            uid = data.get("update_id") if isinstance(data, dict) else None
            if not isinstance(uid, int) or isinstance(uid, bool):
                return PlainTextResponse("bad update", status_code=400)
            try:
                claim = await self.process(uid, data)
            except RedisError:
                return PlainTextResponse("storage unavailable", status_code=503)  # Telegram retries
            if claim == "busy":
                # Being handled by a live replica right now: ask for a later delivery, so that
                # the update is not lost if that replica dies before applying it.
                return PlainTextResponse("in progress", status_code=503, headers={"Retry-After": "1"})
            return PlainTextResponse("ok")

        async def healthz(request: Request) -> Response:
            checks = {}
            try:
                # A write and a read, not a ping: a Redis that answers with errors (no quorum,
                # read-only, out of memory) cannot keep the bot's state.
                await asyncio.wait_for(self.app.leases.health(), 2)
                checks["redis"] = True
            except Exception:
                checks["redis"] = False
            try:
                await asyncio.wait_for(self.client.list_jobs(page=1, page_size=1), 5)
                checks["batchjob"] = True
            except Exception:
                checks["batchjob"] = False
            # The doctor's probe (taken again when it failed): the service answers in shapes
            # the bot can read.
            diagnosis = await self.probe.current()
            checks["service_probe"] = diagnosis is not None and diagnosis.ok
            body = {
                **checks,
                "probe": self.probe.summary(),
                "access": "restricted" if self.conv.restricted else "open",
            }
            return JSONResponse(body, status_code=200 if all(checks.values()) else 503)

        token = self.tg.bot_metrics_token.get_secret_value() if self.tg.bot_metrics_token else None
        metrics = endpoint(self.render_metrics, token)

        return Starlette(
            routes=[
                Route(path, webhook, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/metrics", metrics, methods=["GET"]),
                *(extra_routes or []),
            ]
        )

    async def render_metrics(self) -> str:
        lines = [
            "# TYPE batchjob_bot_updates_total counter",
            f"batchjob_bot_updates_total {self.metrics['updates']}",
            f"batchjob_bot_updates_duplicate_total {self.metrics['updates_duplicate']}",
            f"batchjob_bot_updates_busy_total {self.metrics['updates_busy']}",
            "# TYPE batchjob_bot_chats_resumed_total counter",
            f"batchjob_bot_chats_resumed_total {self.app.recovery.resumed}",
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
            lines += await spend_lines(self.app.runner.spending.budgets)
        except RedisError:
            lines.append("batchjob_bot_redis_up 0")
        for more in self.more_metrics:  # another channel served by this process
            lines += more()
        return "\n".join(lines) + "\n"
