"""The agents' API attached to a conversation app (its chats routed by channel), and served
alone (`batchjob-bot --api`: the API, /healthz and the callback sender)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.channel import ApiChannel
from bot.api.http import routes
from bot.api.service import Agents
from bot.channels import ChannelRouter
from conversation.app import ConversationApp


def attach(app: ConversationApp, router: ChannelRouter) -> Agents:
    """Submissions become chats of the `api` channel of `router` (the app's channel)."""
    settings = app.runner.settings
    channel = ApiChannel(Path(settings.media_dir) / "api")
    router.add("api", channel)
    return Agents(app, channel, settings.api_progress_seconds)


def api_routes(agents: Agents) -> list[Route]:
    return routes(agents, agents.runner.settings.max_download_bytes)


def standalone(agents: Agents) -> Starlette:
    async def healthz(request: Request) -> Response:
        try:
            await asyncio.wait_for(agents.app.leases.health(), 2)
            return JSONResponse({"redis": True})
        except Exception:
            return JSONResponse({"redis": False}, status_code=503)

    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]), *api_routes(agents)])


class Sender:
    """The callback sender's task (any replica sends what is due)."""

    def __init__(self, agents: Agents) -> None:
        self.agents = agents
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.agents.callbacks.run(), name="callbacks")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
