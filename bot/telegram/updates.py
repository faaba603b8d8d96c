"""Telegram updates → conversation events. Anything unexpected becomes a hint or silence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    update: dict[str, Any], bot_username: str, admins: frozenset[str], download_limit: int
) -> Incoming | None:
    """The conversation event of an update (the Bot API's JSON), or None when the bot should
    stay silent. Read from the JSON itself, not through PTB's Update: building PTB's objects
    for every update was ~2.5% of the bot's CPU in a burst, for the few fields read here. A
    field of an unexpected type reads as absent."""
    q = _obj(update, "callback_query")
    if q is not None:
        qid, data, sender = _str(q, "id"), _str(q, "data"), _obj(q, "from") or {}
        chat = _chat_id(_obj(q, "message"))
        if chat is None or data is None or len(data.encode()) > MAX_CALLBACK_DATA:
            return (
                Incoming("", None, None, callback_id=qid)
                if chat is None
                else Incoming(chat, None, _str(sender, "language_code"), callback_id=qid)
            )
        user = _int(sender, "id")
        return Incoming(
            chat,
            ButtonPressed(data, _tg(user) if user is not None else ""),
            _str(sender, "language_code"),
            callback_id=qid,
        )
    msg = _obj(update, "message")
    chat = _chat_id(msg)
    if msg is None or chat is None:  # edited messages, channel posts, polls, ...: nothing to answer
        return None
    user = _obj(msg, "from")
    uid = _int(user, "id") if user is not None else None
    user_id = _tg(uid) if uid is not None else ""
    lang = _str(user, "language_code") if user is not None else None
    private = _str(_obj(msg, "chat") or {}, "type") == "private"
    doc = _obj(msg, "document")
    if doc is not None and (ref := _str(doc, "file_id")):
        size = _int(doc, "file_size")
        return Incoming(
            chat,
            FileReceived(
                ref=ref,
                filename=_str(doc, "file_name") or "file",
                size=size,
                caption=_str(msg, "caption"),
                too_large=size is not None and size > download_limit,
                user_id=user_id,
            ),
            lang,
        )
    text = _str(msg, "text")
    if text is None:
        # photos, stickers, voice, ...: a short hint in private chats, silence in groups
        return Incoming(chat, None, lang, hint="tg.send_a_file") if private else None
    if text.startswith("/"):
        head, *args = text[1:].split() or [""]
        name, _, target = head.partition("@")
        if target and target.lower() != bot_username.lower():
            return None  # a command for another bot in the same group
        return Incoming(chat, CommandReceived(name.lower(), tuple(args), user_id, user_id in admins), lang)
    if not private and not _addressed_to_bot(msg, text, bot_username):
        return None
    return Incoming(chat, TextReceived(text.replace(f"@{bot_username}", "").strip(), user_id), lang)


def _obj(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    v = d.get(key)
    return v if isinstance(v, dict) else None


def _int(d: dict[str, Any], key: str) -> int | None:
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _str(d: dict[str, Any], key: str) -> str | None:
    v = d.get(key)
    return v if isinstance(v, str) else None


def _chat_id(msg: dict[str, Any] | None) -> str | None:
    chat = _obj(msg, "chat") if msg is not None else None
    cid = _int(chat, "id") if chat is not None else None
    return _tg(cid) if cid is not None else None


def _tg(raw: int) -> str:
    return f"{TELEGRAM}:{raw}"


def _addressed_to_bot(msg: dict[str, Any], text: str, bot_username: str) -> bool:
    """In groups (privacy mode on) the bot sees replies to it and mentions; answer only those."""
    reply = _obj(msg, "reply_to_message")
    author = _obj(reply, "from") if reply is not None else None
    if author is not None and author.get("is_bot") is True:
        return True
    return f"@{bot_username}".lower() in text.lower()
