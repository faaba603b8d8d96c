"""The Channel of the conversation, over Feishu / Lark's Open Platform.

Messages go out through the official SDK (`lark-oapi`): text without buttons, an
interactive card with them (a card is what can be updated in place: the job's progress).
Two things the SDK does not do the way a bot serving many chats needs, and are done here:
- the tenant access token: the SDK fetches it with a blocking call inside each async
  request; here it is fetched without blocking and handed to the SDK (`enable_set_token`);
- downloads: the SDK reads a message's file whole into memory; here it is streamed to disk
  and cut off at the size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx

from batchjob.fetch import TooLarge, save_capped
from batchjob.http_transport import asyncio_transport
from bot.flood import FloodControl
from bot.lark.events import parse_file_ref
from conversation.channel import (
    ALBUM,
    Buttons,
    DeliveryUnknown,
    DownloadError,
    MessageGone,
    MessageId,
    is_link,
    pass_gate,
    read_data,
    split_text,
)
from conversation.identity import native

log = logging.getLogger("bot.lark")

MAX_TEXT = 8_000  # per message; a text message may hold 150 KB, a card 30 KB
RATE_LIMITED = {99991400, 230020}  # app-wide frequency limit; the chat's own
GONE = {230011, 231003}  # the message was recalled / deleted
TOKEN_MARGIN_S = 300  # renew the tenant token this long before it expires


class LarkError(Exception):
    def __init__(self, code: int, msg: str, retry_after: float | None = None) -> None:
        super().__init__(f"Feishu error {code}: {msg[:200]}")
        self.code = code
        self.retry_after = retry_after


def card(text: str, buttons: Buttons | None) -> str:
    """An interactive card: the text as plain text (no markup from user input), then the
    buttons, one action row per row; each button's value carries its callback data."""
    elements: list[dict[str, Any]] = [{"tag": "div", "text": {"tag": "plain_text", "content": text}}]
    for row in buttons or []:
        actions = [
            {
                "tag": "button",
                "text": {"tag": "plain_text", "content": label[:64]},
                "type": "default",
                **({"url": data} if is_link(data) else {"value": {"d": data}}),
            }
            for label, data in row
            if is_link(data) or len(data.encode()) <= 64
        ]
        if actions:
            elements.append({"tag": "action", "actions": actions})
    # update_multi: one card for everyone in the chat, so an update shows to all of them.
    return json.dumps({"config": {"update_multi": True}, "elements": elements}, ensure_ascii=False)


class TenantToken:
    """The app's tenant access token, fetched without blocking and renewed before it lapses."""

    def __init__(self, base_url: str, app_id: str, app_secret: str, http: httpx.AsyncClient) -> None:
        self.url = f"{base_url}/open-apis/auth/v3/tenant_access_token/internal"
        self._body = {"app_id": app_id, "app_secret": app_secret}
        self.http = http
        self._token = ""
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        if self._token and time.monotonic() < self._until:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._until:
                return self._token
            r = await self.http.post(self.url, json=self._body)
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            token = body.get("tenant_access_token") if isinstance(body, dict) else None
            if r.status_code != 200 or body.get("code") != 0 or not isinstance(token, str):
                raise LarkError(
                    int(body.get("code") or r.status_code), str(body.get("msg") or "token refused")
                )
            expire = body.get("expire")
            self._token = token
            self._until = time.monotonic() + max(
                60, (expire if isinstance(expire, int) else 7200) - TOKEN_MARGIN_S
            )
            return token


class LarkChannel:
    def __init__(
        self,
        base_url: str,
        app_id: str,
        app_secret: str,
        flood: FloodControl | None = None,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_downloads: int = 8,
    ) -> None:
        import lark_oapi as lark

        self.base_url = base_url
        self.flood = flood
        self.max_attempts = max_attempts
        self.http = httpx.AsyncClient(timeout=timeout_s, transport=asyncio_transport(max_connections=32))
        self.token = TenantToken(base_url, app_id, app_secret, self.http)
        self.sdk = (
            lark.Client.builder()
            .app_id(app_id)
            .app_secret(app_secret)
            .domain(base_url)
            .timeout(timeout_s)
            .enable_set_token(True)
            .log_level(lark.LogLevel.ERROR)
            .build()
        )
        self._downloads = asyncio.Semaphore(max_downloads)

    async def aclose(self) -> None:
        if self.flood is not None:
            with contextlib.suppress(Exception):  # unrecorded, they lapse on their own
                await self.flood.flush()
        await self.http.aclose()

    def answers_ahead(self, chat_id: str = "") -> float:
        return self.flood.answers_ahead() if self.flood is not None else 0.0

    async def _option(self) -> Any:
        from lark_oapi import RequestOption

        return RequestOption.builder().tenant_access_token(await self.token.get()).build()

    @staticmethod
    def _check(resp: Any) -> Any:
        if resp.success():
            return getattr(resp, "data", None)
        raw = getattr(resp, "raw", None)
        retry = None
        if raw is not None and (raw.status_code == 429 or resp.code in RATE_LIMITED):
            reset = (raw.headers or {}).get("x-ogw-ratelimit-reset")
            retry = float(reset) if reset and str(reset).isdigit() else 1.0
        raise LarkError(int(resp.code or 0), str(resp.msg or ""), retry)

    async def _call(self, chat_id: str, fn, request: Any) -> Any:  # type: ignore[no-untyped-def]
        """Flood control before each message; a frequency-limit answer is waited out."""

        async def send() -> Any:
            option = await self._option()
            await pass_gate()  # the request leaves now: the message leaves the outbox
            return self._check(await fn(request, option))

        for attempt in range(self.max_attempts):
            try:
                if self.flood is not None:
                    return await self.flood.send(chat_id, send)
                return await send()
            except LarkError as e:
                if e.retry_after is None or attempt == self.max_attempts - 1:
                    raise
                await asyncio.sleep(min(e.retry_after, 60))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _create(self, chat_id: str, msg_type: str, content: str) -> str:
        from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody

        req = (
            CreateMessageRequest.builder()
            # An admin named by user (open id, ou_…) is written to in their private chat.
            .receive_id_type("open_id" if native(chat_id).startswith("ou_") else "chat_id")
            .request_body(
                CreateMessageRequestBody.builder()
                .receive_id(native(chat_id))
                .msg_type(msg_type)
                .content(content)
                .build()
            )
            .build()
        )
        try:
            data = await self._call(chat_id, self.sdk.im.v1.message.acreate, req)
        except (httpx.ReadTimeout, httpx.RemoteProtocolError):
            raise DeliveryUnknown("message create timed out") from None  # sent; maybe delivered
        return str(getattr(data, "message_id", "") or "")

    async def send_text(self, chat_id: str, text: str, buttons: Buttons | None = None) -> MessageId:
        pieces = split_text(text, MAX_TEXT)
        message_id = ""
        for i, piece in enumerate(pieces):
            if i == len(pieces) - 1 and buttons:
                message_id = await self._create(chat_id, "interactive", card(piece, buttons))
            else:
                message_id = await self._create(
                    chat_id, "text", json.dumps({"text": piece}, ensure_ascii=False)
                )
        return message_id

    async def edit_text(
        self, chat_id: str, message_id: MessageId, text: str, buttons: Buttons | None = None
    ) -> None:
        """Update a card in place (the messages that are edited are the ones sent with
        buttons: cards). Without buttons, the card keeps its text and loses its buttons."""
        from lark_oapi.api.im.v1 import PatchMessageRequest, PatchMessageRequestBody

        req = (
            PatchMessageRequest.builder()
            .message_id(str(message_id))
            .request_body(
                PatchMessageRequestBody.builder()
                .content(card(split_text(text, MAX_TEXT)[0], buttons))
                .build()
            )
            .build()
        )
        try:
            await self._call(chat_id, self.sdk.im.v1.message.apatch, req)
        except LarkError as e:
            if e.code in GONE:
                raise MessageGone(str(e)) from None
            raise

    async def send_images(self, chat_id: str, images: list[tuple[Path, str]]) -> None:
        """An album as one rich-text post: each image (uploaded with the image API) under
        its caption."""
        from lark_oapi.api.im.v1 import CreateImageRequest, CreateImageRequestBody

        content: list[list[dict[str, str]]] = []
        for path, caption in images[:ALBUM]:
            req = (
                CreateImageRequest.builder()
                .request_body(
                    CreateImageRequestBody.builder()
                    .image_type("message")
                    .image(io.BytesIO(path.read_bytes()))
                    .build()
                )
                .build()
            )
            uploaded = self._check(await self.sdk.im.v1.image.acreate(req, await self._option()))
            content.append([{"tag": "text", "text": caption[:200]}])
            content.append([{"tag": "img", "image_key": uploaded.image_key}])
        post = {"zh_cn": {"title": "", "content": content}}
        await self._create(chat_id, "post", json.dumps(post, ensure_ascii=False))

    async def send_document(
        self, chat_id: str, filename: str, data: bytes | Path, caption: str | None = None
    ) -> None:
        from lark_oapi.api.im.v1 import CreateFileRequest, CreateFileRequestBody

        req = (
            CreateFileRequest.builder()
            .request_body(
                CreateFileRequestBody.builder()
                .file_type("xls" if filename.endswith((".xls", ".xlsx")) else "stream")
                .file_name(filename)
                .file(io.BytesIO(read_data(data)))
                .build()
            )
            .build()
        )
        # The upload is no message: outside the flood budget; the file message is one.
        uploaded = self._check(await self.sdk.im.v1.file.acreate(req, await self._option()))
        key = json.dumps({"file_key": uploaded.file_key})
        await self._create(chat_id, "file", key)
        if caption:
            await self.send_text(chat_id, caption)

    async def download(self, ref: str, dest: Path, max_bytes: int) -> Path:
        parsed = parse_file_ref(ref)
        if parsed is None:
            raise DownloadError("download_refused")
        message_id, key = parsed
        url = f"{self.base_url}/open-apis/im/v1/messages/{message_id}/resources/{key}"
        try:
            async with self._downloads:
                headers = {"Authorization": f"Bearer {await self.token.get()}"}
                async with self.http.stream("GET", url, params={"type": "file"}, headers=headers) as r:
                    if r.status_code != 200:
                        raise DownloadError("too_large" if r.status_code == 413 else "download_failed")
                    await save_capped(r, dest, max_bytes)
        except TooLarge:
            dest.unlink(missing_ok=True)
            raise DownloadError("too_large") from None
        except DownloadError:
            dest.unlink(missing_ok=True)
            raise
        except (httpx.HTTPError, LarkError, OSError):
            dest.unlink(missing_ok=True)
            raise DownloadError("download_failed") from None
        return dest
