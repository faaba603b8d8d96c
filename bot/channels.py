"""One Channel for the conversation over several: each call goes to the channel its chat
(or file handle) names. One process may serve Telegram and Feishu with one store and watcher."""

from __future__ import annotations

from pathlib import Path

from conversation.channel import Buttons, Channel, MessageId
from conversation.identity import channel_of


class NotServed(Exception):
    """A chat of a channel this process does not serve (run every replica with the same
    --channel, so that any of them can finish any job)."""


class ChannelRouter:
    def __init__(self, channels: dict[str, Channel] | None = None) -> None:
        self.channels: dict[str, Channel] = dict(channels or {})

    def add(self, name: str, channel: Channel) -> None:
        self.channels[name] = channel

    def _of(self, qualified: str) -> Channel:
        name = channel_of(qualified)
        try:
            return self.channels[name]
        except KeyError:
            raise NotServed(name) from None

    def answers_ahead(self, chat_id: str) -> float:
        ahead = getattr(self.channels.get(channel_of(chat_id)), "answers_ahead", None)
        return ahead(chat_id) if ahead is not None else 0.0  # a channel without a budget: none

    async def send_text(self, chat_id: str, text: str, buttons: Buttons | None = None) -> MessageId:
        return await self._of(chat_id).send_text(chat_id, text, buttons)

    async def edit_text(
        self, chat_id: str, message_id: MessageId, text: str, buttons: Buttons | None = None
    ) -> None:
        await self._of(chat_id).edit_text(chat_id, message_id, text, buttons)

    async def send_document(
        self, chat_id: str, filename: str, data: bytes | Path, caption: str | None = None
    ) -> None:
        await self._of(chat_id).send_document(chat_id, filename, data, caption)

    async def send_images(self, chat_id: str, images: list[tuple[Path, str]]) -> None:
        await self._of(chat_id).send_images(chat_id, images)

    async def download(self, ref: str, dest: Path, max_bytes: int) -> Path:
        # A Telegram file_id is bare; other channels' handles name their channel.
        return await self._of(ref).download(ref, dest, max_bytes)
