"""Events by long connection: the SDK's WebSocket client, inside the bot's event loop.

No public address is needed, and Feishu hands each event to one connected client, which
suits replicas. Two adaptations of the SDK's client (`lark_oapi.ws.Client`), both because it
is built to own a thread and its loop:
- it binds an event loop when first imported and schedules its tasks there; it is pointed
  at the running loop before connecting;
- it calls a synchronous handler and acknowledges the event as soon as that returns; here
  the acknowledgement waits until the event is applied (at most the time Feishu allows), and
  says "failed" otherwise, so that Feishu delivers it again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.lark.settings import LarkSettings

log = logging.getLogger("bot.lark")


def _client_class() -> type:
    import lark_oapi.ws.client as sdk
    from lark_oapi.core.json import JSON
    from lark_oapi.ws.const import HEADER_MESSAGE_ID, HEADER_SEQ, HEADER_SUM, HEADER_TYPE
    from lark_oapi.ws.enum import MessageType
    from lark_oapi.ws.model import Response

    class Client(sdk.Client):  # type: ignore[misc]
        on_event: Callable[[bytes], Awaitable[bool]]
        stopping = False

        async def _receive_message_loop(self) -> None:
            try:
                await super()._receive_message_loop()
            except Exception:
                if not self.stopping:  # closed by stop(): nothing went wrong
                    raise

        async def _handle_data_frame(self, frame: Any) -> None:
            hs = frame.headers
            kind = sdk._get_by_key(hs, HEADER_TYPE)
            payload = frame.payload
            parts = int(sdk._get_by_key(hs, HEADER_SUM))
            if parts > 1:  # an event in several frames: wait for all of them
                msg_id = sdk._get_by_key(hs, HEADER_MESSAGE_ID)
                payload = self._combine(msg_id, parts, int(sdk._get_by_key(hs, HEADER_SEQ)), payload)
                if payload is None:
                    return
            ok = True
            if MessageType(kind) in (MessageType.EVENT, MessageType.CARD):
                try:
                    ok = await self.on_event(payload)
                except Exception:
                    log.exception("event failed")
                    ok = False
            resp = Response(code=http.HTTPStatus.OK if ok else http.HTTPStatus.INTERNAL_SERVER_ERROR)
            if ok:
                resp.data = base64.b64encode(b"{}")
            frame.payload = JSON.marshal(resp).encode()
            await self._write_message(frame.SerializeToString())

    return Client


class LongConnection:
    def __init__(self, settings: LarkSettings, on_event: Callable[[bytes], Awaitable[bool]]) -> None:
        self.settings = settings
        self.on_event = on_event
        self.client: Any = None
        self._ping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import lark_oapi as lark
        import lark_oapi.ws.client as sdk

        sdk.loop = asyncio.get_running_loop()  # see the module's docstring
        self.client = _client_class()(
            self.settings.lark_app_id,
            self.settings.lark_app_secret.get_secret_value(),
            log_level=lark.LogLevel.WARNING,
            domain=self.settings.base_url,
        )
        self.client.on_event = self.on_event
        # The endpoint request inside is synchronous: one short blocking call per connect.
        await self.client._connect()
        self._ping = asyncio.create_task(self.client._ping_loop(), name="lark-ping")

    async def stop(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
        if self.client is not None:
            self.client._auto_reconnect = False
            self.client.stopping = True
            with contextlib.suppress(Exception):
                await self.client._disconnect()
