"""The Channel of the conversation, over the Telegram Bot API."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from typing import Any

import httpx
from telegram import Bot, InputFile, InputMediaPhoto
from telegram.error import BadRequest, RetryAfter, TelegramError, TimedOut
from telegram.warnings import PTBUserWarning

from bot.flood import FloodControl
from bot.telegram.request import NotSent
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

log = logging.getLogger("bot.telegram")

# Texts and their edits go out through `Bot.do_api_request`: their answers are read for a
# message id at most, and building PTB's Message and keyboard objects for each call was
# ~40% of a send's CPU. PTB asks to use its methods for these endpoints; here that is chosen.
warnings.filterwarnings(
    "ignore", message=r"Please use 'Bot\.(send_message|edit_message_text)'", category=PTBUserWarning
)

MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64


def markup(buttons: Buttons | None) -> dict[str, Any] | None:
    """An inline keyboard as the Bot API reads it: links as url buttons, the rest as
    callback buttons (data longer than Telegram's 64 bytes is left out)."""
    if not buttons:
        return None
    rows = [
        [
            {"text": label[:64], "url": data}
            if is_link(data)
            else {"text": label[:64], "callback_data": data}
            for label, data in row
            if is_link(data) or len(data.encode()) <= MAX_CALLBACK_DATA
        ]
        for row in buttons
    ]
    return {"inline_keyboard": [r for r in rows if r]} if any(rows) else None


def never_sent(e: TimedOut) -> bool:
    """A timeout before the request left (no connection from the pool, or none made)."""
    return isinstance(e.__cause__, NotSent | httpx.PoolTimeout | httpx.ConnectTimeout)


def _retry_after_seconds(e: RetryAfter) -> float:
    ra = e.retry_after
    return ra.total_seconds() if hasattr(ra, "total_seconds") else float(ra)


def _message_id(answer: object) -> int:
    """The id of the message Telegram answered with; an answer of another shape is a
    BadRequest rather than a crash in the middle of a flow."""
    mid = answer.get("message_id") if isinstance(answer, dict) else None
    if isinstance(mid, int) and not isinstance(mid, bool):
        return mid
    raise BadRequest("the answer to sendMessage names no message")


class TelegramChannel:
    def __init__(
        self, bot: Bot, flood: FloodControl | None = None, *, max_attempts: int = 4, max_downloads: int = 8
    ) -> None:
        self.bot = bot
        self.flood = flood
        self.max_attempts = max_attempts
        # Downloads at once: more would only queue inside the HTTP pool, whose bookkeeping
        # grows with every queued request, and hold up the messages.
        self._downloads = asyncio.Semaphore(max_downloads)

    def answers_ahead(self, chat_id: str = "") -> float:
        return self.flood.answers_ahead() if self.flood is not None else 0.0

    async def _call(self, chat_id: str, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Flood control before each call; a 429 is waited out (Telegram did not process it)."""

        async def request():  # type: ignore[no-untyped-def]
            await pass_gate()  # the request leaves now: the message leaves the outbox
            return await fn(*args, **kwargs)

        for attempt in range(self.max_attempts):
            try:
                if self.flood is not None:
                    return await self.flood.send(chat_id, request)
                return await request()
            except RetryAfter as e:
                if attempt == self.max_attempts - 1:
                    raise
                await asyncio.sleep(_retry_after_seconds(e))
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_text(self, chat_id: str, text: str, buttons: Buttons | None = None) -> int:
        pieces = split_text(text)
        message_id = 0
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            try:
                params = {"chat_id": int(native(chat_id)), "text": piece}
                if last and (keyboard := markup(buttons)):
                    params["reply_markup"] = keyboard
                msg = await self._call(chat_id, self.bot.do_api_request, "send_message", api_kwargs=params)
            except TimedOut as e:
                if never_sent(e):
                    raise
                raise DeliveryUnknown("sendMessage timed out") from None  # sent; maybe delivered
            message_id = _message_id(msg)
        return message_id

    async def edit_text(
        self, chat_id: str, message_id: MessageId, text: str, buttons: Buttons | None = None
    ) -> None:
        try:
            params = {
                "chat_id": int(native(chat_id)),
                "message_id": int(message_id),
                "text": split_text(text)[0],
            }
            if keyboard := markup(buttons):
                params["reply_markup"] = keyboard
            await self._call(chat_id, self.bot.do_api_request, "edit_message_text", api_kwargs=params)
        except BadRequest as e:
            reason = str(e).lower()
            if "not modified" in reason:
                return  # the same text again: harmless
            if "message to edit not found" in reason or "can't be edited" in reason:
                raise MessageGone(reason) from None
            raise

    async def send_document(
        self, chat_id: str, filename: str, data: bytes | Path, caption: str | None = None
    ) -> None:
        await self._call(
            chat_id,
            self.bot.send_document,
            chat_id=int(native(chat_id)),
            document=InputFile(read_data(data), filename=filename),
            caption=caption[:1024] if caption else None,
        )

    async def send_images(self, chat_id: str, images: list[tuple[Path, str]]) -> None:
        """sendMediaGroup (2-10 photos); one image alone goes as sendPhoto."""
        photos = [(p.read_bytes(), caption[:1024]) for p, caption in images[:ALBUM]]
        if len(photos) == 1:
            data, caption = photos[0]
            await self._call(
                chat_id, self.bot.send_photo, chat_id=int(native(chat_id)), photo=data, caption=caption
            )
            return
        media = [InputMediaPhoto(data, caption=caption) for data, caption in photos]
        await self._call(chat_id, self.bot.send_media_group, chat_id=int(native(chat_id)), media=media)

    async def download(self, ref: str, dest: Path, max_bytes: int) -> Path:
        try:
            async with self._downloads:
                file = await self.bot.get_file(ref)
                if file.file_size and file.file_size > max_bytes:
                    raise DownloadError("too_large")
                await file.download_to_drive(custom_path=dest)
        except BadRequest as e:
            if "too big" in str(e).lower():
                raise DownloadError("too_large") from None
            raise DownloadError("download_refused") from None
        except (TelegramError, OSError):
            raise DownloadError("download_failed") from None
        dest.chmod(0o600)
        if dest.stat().st_size > max_bytes:
            dest.unlink(missing_ok=True)
            raise DownloadError("too_large")
        return dest
