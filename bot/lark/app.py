"""The Feishu / Lark bot: events in (long connection or webhook), the shared conversation app.

An event is handled once across replicas, like a Telegram update: leased by its event id
while it is handled, done once its step is saved (what is left to do is then in Redis). Feishu
wants an answer within 3 seconds, else it delivers the event again; the handler answers as
soon as the event is applied, and when that takes longer it answers "not yet" (the work goes
on; the redelivery finds it done, or, if this process died, handles it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

import locales
from batchjob.client import BatchJobClient
from bot.flood import FloodControl
from bot.flood_rules import LARK_LIMITS
from bot.lark.channel import LarkChannel
from bot.lark.events import Incoming, to_event
from bot.lark.settings import RESOURCE_LIMIT, LarkSettings
from bot.metrics import endpoint, spend_lines
from bot.redact import redact_secrets
from conversation.app import ConversationApp, keys_for
from conversation.leases import Claim
from conversation.settings import ConversationSettings

log = logging.getLogger("bot.lark")

ANSWER_WITHIN_S = 2.5  # Feishu's limit is 3 s


class LarkBot:
    def __init__(
        self,
        settings: LarkSettings,
        conv: ConversationSettings,
        redis: Redis,
        client: BatchJobClient,
        *,
        app: ConversationApp | None = None,
    ) -> None:
        self.settings = settings
        self.conv = conv
        self.client = client
        self.metrics: Counter[str] = Counter()
        secret = settings.lark_app_secret.get_secret_value()
        redact_secrets(
            secret,
            settings.lark_encrypt_key.get_secret_value() if settings.lark_encrypt_key else None,
            settings.lark_verification_token.get_secret_value() if settings.lark_verification_token else None,
        )
        flood = FloodControl(redis, scale=settings.lark_flood_scale, keys=keys_for(conv), limits=LARK_LIMITS)
        self.channel = LarkChannel(
            settings.base_url, settings.lark_app_id, secret, flood, timeout_s=settings.lark_timeout_seconds
        )
        self.owns_app = app is None
        self.app = app or ConversationApp(redis, client, self.channel, conv)
        self.bot_open_id = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws: Any = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self.bot_open_id = await self._bot_open_id()
        if self.owns_app:  # warmed before the first event, as the Telegram channel is
            self.app.start_watcher()
            await self.app.warmed()
        if self.settings.lark_mode == "ws":
            from bot.lark.longconn import LongConnection

            self._ws = LongConnection(self.settings, self.on_event_bytes)
            await self._ws.start()

    async def _bot_open_id(self) -> str:
        """The bot's own open_id, to tell a mention of the bot in a group from others'."""
        token = await self.channel.token.get()
        r = await self.channel.http.get(
            f"{self.settings.base_url}/open-apis/bot/v3/info", headers={"Authorization": f"Bearer {token}"}
        )
        body = r.json() if r.status_code == 200 else {}
        bot = body.get("bot") if isinstance(body, dict) else None
        return str(bot.get("open_id") or "") if isinstance(bot, dict) else ""

    async def stop(self, grace_s: float = 5.0) -> None:
        if self._ws is not None:
            await self._ws.stop()
        # Events being handled may finish; past the grace time they are cancelled (what is
        # left is in Redis: the recovery of the next start, or another replica, carries on).
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                # Bounded: a command cut short by the cancel can leave a Redis Cluster
                # connection that never answers again; stopping must not wait on it.
                await asyncio.wait(late, timeout=grace_s)
        if self.owns_app:
            await self.app.stop()
        await self.channel.aclose()

    # --- events --------------------------------------------------------------------------

    async def on_event_bytes(self, payload: bytes) -> bool:
        """An event's JSON (decrypted): True once it is applied (or needs nothing), False when
        it is not yet (Feishu should deliver it again)."""
        try:
            body = json.loads(payload)
        except ValueError:
            return True  # nothing anyone can do with it
        return await self.answer(body)

    async def answer(self, body: dict[str, Any]) -> bool:
        """Handle an event in a task; wait for it to be applied, at most ANSWER_WITHIN_S."""
        applied = asyncio.Event()
        task = asyncio.create_task(self.process(body, applied))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        waiter = asyncio.create_task(applied.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=ANSWER_WITHIN_S, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if task in done and task.exception() is not None:
            return False
        if task in done:
            return task.result() != "busy"
        return applied.is_set()

    async def process(self, body: dict[str, Any], applied: asyncio.Event | None = None) -> Claim:
        """Handle one event once: "new", "done" for a duplicate, "busy" while another live
        handler has it."""
        self.metrics["events"] += 1
        incoming = to_event(body, self.bot_open_id, frozenset(self.conv.admin_ids), self.settings.file_groups)
        if incoming is None:
            if applied is not None:
                applied.set()
            return "new"
        update = incoming.event_id if incoming.event_id.startswith("lark:") else f"lark:{incoming.event_id}"
        # Leased in the chat's slot: the write that applies its event marks it done too. The
        # claim lists the chat as worked on here in the same round trip.
        chat = incoming.chat_id or None
        async with self.app.runner.claimed(update, chat) as claim:
            if claim != "new":
                self.metrics[f"events_{'duplicate' if claim == 'done' else 'busy'}"] += 1
                if applied is not None and claim == "done":
                    applied.set()
                return claim
            await self._handle_claimed(incoming, update, chat, applied)
        return "new"

    async def _handle_claimed(
        self, incoming: Incoming, update: str, chat: str | None, applied: asyncio.Event | None
    ) -> None:
        leases = self.app.leases
        done = False

        async def applied_here() -> None:
            nonlocal done
            done = True
            if applied is not None:
                applied.set()

        try:
            await self._dispatch(incoming, update, applied_here, leases.k.update(update, chat), bool(chat))
            if not done:
                await leases.update_done(update, chat)
                await applied_here()
        except BaseException:
            if not done:
                with contextlib.suppress(RedisError):
                    await leases.release_update(update, chat)
            raise

    async def _dispatch(
        self, incoming: Incoming, update: str, applied_here: Any, update_key: str, listed: bool = False
    ) -> None:
        lang = incoming.lang
        if incoming.event is not None:
            await self.app.runner.handle(
                incoming.chat_id,
                incoming.event,
                client_lang=lang,
                event_id=update,
                on_applied=applied_here,
                default_lang=self.settings.default_lang,
                update_key=update_key,
                listed=listed,
            )
        elif incoming.hint:
            state = await self.app.store.load(incoming.chat_id)
            text = locales.t(state.lang if state.lang_fixed else self.settings.default_lang, incoming.hint)
            await self.channel.send_text(incoming.chat_id, text)

    # --- webhook -------------------------------------------------------------------------

    def webhook_route(self):  # type: ignore[no-untyped-def]
        """The request URL of the event subscription: URL verification, then events, each
        checked (verification token, signature) and decrypted by the SDK's dispatcher."""
        from starlette.routing import Route

        from bot.lark.webhook import Verifier

        verifier = Verifier(self.settings)

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            if len(raw) > 1 << 20:
                return PlainTextResponse("too large", status_code=413)
            outcome = verifier.open(raw, dict(request.headers))
            if outcome.challenge is not None:
                return JSONResponse({"challenge": outcome.challenge})
            if outcome.body is None:
                return PlainTextResponse("forbidden", status_code=403)
            try:
                ok = await self.answer(outcome.body)
            except RedisError:
                ok = False
            if not ok:  # not applied yet: Feishu delivers it again
                return PlainTextResponse("in progress", status_code=503)
            return JSONResponse({})

        return Route(self.settings.lark_webhook_path, endpoint, methods=["POST"])

    def asgi(self, extra_routes: list | None = None):  # type: ignore[no-untyped-def]
        """The webhook (in webhook mode) and /healthz, for a bot serving Feishu/Lark alone."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        async def healthz(request: Request) -> Response:
            access = "restricted" if self.app.runner.settings.restricted else "open"
            try:
                await asyncio.wait_for(self.app.leases.health(), 2)
                return JSONResponse({"redis": True, "access": access})
            except Exception:
                return JSONResponse({"redis": False, "access": access}, status_code=503)

        async def render() -> str:
            lines = self.metric_lines()
            try:
                lines += await spend_lines(self.app.runner.spending.budgets)
            except RedisError:
                lines.append("batchjob_bot_redis_up 0")
            return "\n".join(lines) + "\n"

        token = self.settings.bot_metrics_token
        metrics = endpoint(render, token.get_secret_value() if token else None)
        routes = [Route("/healthz", healthz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]
        if self.settings.lark_mode == "webhook":
            routes.append(self.webhook_route())
        return Starlette(routes=[*routes, *(extra_routes or [])])

    def metric_lines(self) -> list[str]:
        return [
            "# TYPE batchjob_bot_lark_events_total counter",
            f"batchjob_bot_lark_events_total {self.metrics['events']}",
            f"batchjob_bot_lark_events_duplicate_total {self.metrics['events_duplicate']}",
            f"batchjob_bot_lark_events_busy_total {self.metrics['events_busy']}",
        ]

    @property
    def download_limit(self) -> int:
        return min(RESOURCE_LIMIT, self.conv.max_download_bytes)
