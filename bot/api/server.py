"""The agents' API attached to a conversation app (its chats routed by channel), and served
alone (`batchjob-bot --api`: the API, /healthz and the callback sender)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.api.channel import ApiChannel
from bot.api.http import routes
from bot.api.keys import ApiKey
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
    """The API, MCP over streamable HTTP at /mcp, and /healthz."""
    from bot.api.mcp_server import build

    mcp = build(agents)
    mcp_app = mcp.streamable_http_app()

    async def healthz(request: Request) -> Response:
        try:
            await asyncio.wait_for(agents.app.leases.health(), 2)
            return JSONResponse({"redis": True})
        except Exception:
            return JSONResponse({"redis": False}, status_code=503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run():  # the MCP transport's own tasks
            yield

    routes = [Route("/healthz", healthz, methods=["GET"]), *api_routes(agents), *mcp_app.routes]
    return Starlette(routes=routes, lifespan=lifespan)


async def serve_stdio(agents: Agents, key: str | None) -> None:
    """MCP over this process's stdin/stdout, for the agent that started it."""
    from bot.api.mcp_server import build

    if key:
        checked = await agents.keys.check(key)
        if checked is None:
            raise PermissionError("BATCHJOB_BOT_API_KEY is not a live key")
    else:
        checked = await local_key(agents)
    await build(agents, stdio_key=checked, allow_paths=True).run_stdio_async()


async def local_key(agents: Agents) -> ApiKey:
    """The key of whoever runs the stdio server without one (made once, kept by name)."""
    for k in await agents.keys.list():
        if k.name == "stdio" and not k.revoked:
            return k
    _, rec = await agents.keys.create(name="stdio")
    return rec


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
