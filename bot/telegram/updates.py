"""Telegram updates → conversation events. Anything unexpected becomes a hint or silence."""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Update

from conversation.events import ButtonPressed, CommandReceived, Event, FileReceived, TextReceived
from conversation.identity import TELEGRAM

MAX_CALLBACK_DATA = 64


@dataclass(frozen=True)
class Incoming:
    chat_id: str  # channel-qualified: tg:<chat id>
    event: Event | None  # None: answer with `hint` (or nothing)
    lang: str | None
    hint: str | None = None  # message key
    callback_id: str | None = None


def to_event(
    update: Update, bot_username: str, admins: frozenset[str], download_limit: int
) -> Incoming | None:
    """The conversation event of an update, or None when the bot should stay silent."""
    if update.callback_query is not None:
        q = update.callback_query
        msg = q.message
        if msg is None or q.data is None or len(q.data.encode()) > MAX_CALLBACK_DATA:
            return (
                Incoming("", None, None, callback_id=q.id)
                if msg is None
                else Incoming(_tg(msg.chat.id), None, q.from_user.language_code, callback_id=q.id)
            )
        return Incoming(
            _tg(msg.chat.id),
            ButtonPressed(q.data, _tg(q.from_user.id)),
            q.from_user.language_code,
            callback_id=q.id,
        )
    msg = update.message
    if msg is None:  # edited messages, channel posts, polls, ...: nothing a user expects an answer to
        return None
    user = msg.from_user
    user_id = _tg(user.id) if user else ""
    lang = user.language_code if user else None
    private = msg.chat.type == "private"
    if msg.document is not None:
        doc = msg.document
        size = doc.file_size
        return Incoming(
            _tg(msg.chat.id),
            FileReceived(
                ref=doc.file_id,
                filename=doc.file_name or "file",
                size=size,
                caption=msg.caption,
                too_large=size is not None and size > download_limit,
                user_id=user_id,
            ),
            lang,
        )
    text = msg.text
    if text is None:
        # photos, stickers, voice, ...: a short hint in private chats, silence in groups
        return Incoming(_tg(msg.chat.id), None, lang, hint="tg.send_a_file") if private else None
    if text.startswith("/"):
        head, *args = text[1:].split()
        name, _, target = head.partition("@")
        if target and target.lower() != bot_username.lower():
            return None  # a command for another bot in the same group
        return Incoming(
            _tg(msg.chat.id), CommandReceived(name.lower(), tuple(args), user_id, user_id in admins), lang
        )
    if not private and not _addressed_to_bot(msg, bot_username):
        return None
    return Incoming(
        _tg(msg.chat.id), TextReceived(text.replace(f"@{bot_username}", "").strip(), user_id), lang
    )


def _tg(raw: int) -> str:
    return f"{TELEGRAM}:{raw}"


def _addressed_to_bot(msg, bot_username: str) -> bool:  # type: ignore[no-untyped-def]
    """In groups (privacy mode on) the bot sees replies to it and mentions; answer only those."""
    reply = msg.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.is_bot:
        return True
    return f"@{bot_username}".lower() in (msg.text or "").lower()
