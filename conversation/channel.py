"""What the conversation needs from a chat channel (Telegram, console, tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Protocol

Buttons = list[list[tuple[str, str]]]  # rows of (label, callback data or an http(s) link to open)


def is_link(data: str) -> bool:
    """A button that opens a link (the core checked it) rather than calling the bot back."""
    return data.startswith(("https://", "http://"))


# Chats are named by channel-qualified ids (conversation/identity.py); a message by the
# channel's own id for it (Telegram's integer, Feishu's om_… string).
MessageId = int | str

# How long a send can wait, for a channel with a shared send budget: first the first answer
# to what someone just did, then further answers, then the watcher's messages (summaries),
# then progress edits (nobody is waiting on one: they take what is left). Set by the runner
# and the watcher for their tasks.
FIRST_ANSWER, ANSWER, BACKGROUND, PROGRESS = 0, 1, 2, 3
SEND_PRIORITY: ContextVar[int] = ContextVar("send_priority", default=ANSWER)


# The last moment to give a send up. For a message kept in the chat's outbox the runner sets
# a gate that takes the message out of it; a channel passes the gate right before its request
# leaves (after any flood wait), so a process killed while waiting leaves the message to be
# sent by another replica, and one killed after it never has it sent twice.
SEND_GATE: ContextVar[Callable[[], Awaitable[bool]] | None] = ContextVar("send_gate", default=None)


class SendWithdrawn(Exception):
    """The message was taken out of the outbox by another performer: not sent here."""


async def pass_gate() -> None:
    """Called by a channel just before a message's request leaves; raises SendWithdrawn."""
    gate = SEND_GATE.get()
    if gate is None:
        return
    SEND_GATE.set(None)
    if not await gate():
        raise SendWithdrawn()


ALBUM = 10  # images per album: Telegram's sendMediaGroup takes 2-10


def read_data(data: bytes | Path) -> bytes:
    return data if isinstance(data, bytes) else data.read_bytes()


class DeliveryUnknown(Exception):
    """The channel sent a message and got no answer: it may or may not have arrived."""


class MessageGone(Exception):
    """The message to edit no longer exists (the user deleted it) or can no longer be edited."""


class DownloadError(Exception):
    def __init__(self, reason: str) -> None:  # too_large | download_failed | download_refused
        super().__init__(reason)
        self.reason = reason


class Channel(Protocol):
    """A channel with a shared send budget also has `answers_ahead(chat_id) -> float`: the
    seconds of that budget (the one of the chat's channel) the first answers already waiting
    for it will take; the runner takes files in no faster than they can be answered."""

    async def send_text(self, chat_id: str, text: str, buttons: Buttons | None = None) -> MessageId: ...

    async def edit_text(
        self, chat_id: str, message_id: MessageId, text: str, buttons: Buttons | None = None
    ) -> None: ...

    async def send_document(
        self, chat_id: str, filename: str, data: bytes | Path, caption: str | None = None
    ) -> None:
        """A file: its bytes, or a file on disk (read as it is sent)."""
        ...

    async def send_images(self, chat_id: str, images: list[tuple[Path, str]]) -> None:
        """An album of at most ALBUM images (PNG, JPEG or WebP files), each with a caption."""
        ...

    async def download(self, ref: str, dest: Path, max_bytes: int) -> Path:
        """Save the channel file `ref` under `dest` (a file path); raise DownloadError."""
        ...


def split_text(text: str, limit: int = 4096) -> list[str]:
    """Pieces of at most `limit` characters, cut at line ends where possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    pieces.append(text)
    return pieces
