"""Feishu / Lark events (v2 schema, as JSON) → conversation events.

Anything unexpected becomes silence, never an exception: the bodies come from the network.
Feishu's message events carry no user locale, so the language comes from what the user
wrote: a rich-text post names its language (`zh_cn`, `en_us`), text with Chinese characters
is Chinese; otherwise the chat keeps what it had (the deployment's default at first).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from conversation.events import ButtonPressed, CommandReceived, Event, FileReceived, TextReceived
from conversation.identity import LARK

MESSAGE = "im.message.receive_v1"
CARD_ACTION = "card.action.trigger"
MAX_TEXT = 20_000  # a message longer than this is not a prompt, a command or a link
_MENTION = re.compile(r"@_user_\d+|@_all")
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Incoming:
    event_id: str
    chat_id: str  # channel-qualified: lark:oc_…
    event: Event | None  # None: answer with `hint` (or nothing)
    lang: str | None
    hint: str | None = None


def lark(raw: str) -> str:
    return f"{LARK}:{raw}"


def file_ref(message_id: str, file_key: str) -> str:
    """The handle of a file in a message (the message-resource API needs both)."""
    return f"{LARK}:{message_id}:{file_key}"


def parse_file_ref(ref: str) -> tuple[str, str] | None:
    head, _, rest = ref.partition(":")
    message_id, _, key = rest.partition(":")
    ok = head == LARK and re.fullmatch(r"[\w-]{1,128}", message_id) and re.fullmatch(r"[\w-]{1,256}", key)
    return (message_id, key) if ok else None


def _str(d: Any, *path: str) -> str:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d if isinstance(d, str) else ""


def _lang_of(text: str) -> str | None:
    return "zh" if _CJK.search(text) else None


def to_event(
    body: dict[str, Any], bot_open_id: str, admins: frozenset[str], file_groups: frozenset[str]
) -> Incoming | None:
    """The conversation event of one event body, or None when the bot should stay silent."""
    if not isinstance(body, dict):
        return None
    event_id = _str(body, "header", "event_id")
    kind = _str(body, "header", "event_type")
    ev = body.get("event")
    if not event_id or not isinstance(ev, dict):
        return None
    if kind == CARD_ACTION:
        return _card_action(event_id, ev)
    if kind != MESSAGE:
        return None
    msg = ev.get("message")
    if not isinstance(msg, dict) or _str(ev, "sender", "sender_type") not in ("user", ""):
        return None  # other bots' messages are not the bot's business
    chat, message_id = _str(msg, "chat_id"), _str(msg, "message_id")
    if not chat or not message_id:
        return None
    user = _str(ev, "sender", "sender_id", "open_id")
    user_id = lark(user) if user else ""
    group = _str(msg, "chat_type") != "p2p"
    mentions = msg.get("mentions") if isinstance(msg.get("mentions"), list) else []
    mentioned = any(_str(m, "id", "open_id") == bot_open_id for m in mentions if bot_open_id)
    try:
        content = json.loads(_str(msg, "content") or "{}")
    except ValueError:
        return None
    if not isinstance(content, dict):
        return None
    mtype = _str(msg, "message_type")
    cid = lark(chat)
    if mtype == "file":
        key, name = _str(content, "file_key"), _str(content, "file_name") or "file"
        if not key or (group and not mentioned and chat not in file_groups):
            return None
        return Incoming(event_id, cid, FileReceived(file_ref(message_id, key), name, user_id=user_id), None)
    if mtype == "text":
        text = _MENTION.sub("", _str(content, "text")).strip()
        lang = _lang_of(text)
    elif mtype == "post":
        text, lang = _post_text(content)
    else:
        # images, stickers, audio…: a short hint in private chats, silence in groups
        return None if group else Incoming(event_id, cid, None, None, hint="lark.send_a_file")
    if not text or len(text) > MAX_TEXT:
        return None
    if text.startswith("/"):
        head, *args = text[1:].split()
        return Incoming(
            event_id, cid, CommandReceived(head.lower(), tuple(args), user_id, user_id in admins), lang
        )
    if group and not mentioned:
        return None
    return Incoming(event_id, cid, TextReceived(text, user_id), lang)


def _post_text(content: dict[str, Any]) -> tuple[str, str | None]:
    """A rich-text post as plain text, links as their addresses; its language if it names one."""
    lang: str | None = None
    post = content
    if "content" not in content:  # {"zh_cn": {"title", "content"}, …}
        for key, value in content.items():
            if isinstance(value, dict):
                post, lang = value, ("zh" if key.lower().startswith("zh") else "en")
                break
    lines: list[str] = []
    paras = post.get("content")
    for para in paras if isinstance(paras, list) else []:
        if not isinstance(para, list):
            continue
        parts = []
        for node in para:
            tag = _str(node, "tag")
            if tag == "a":
                parts.append(_str(node, "href") or _str(node, "text"))
            elif tag in ("text", "md"):
                parts.append(_str(node, "text"))
        lines.append(_MENTION.sub("", " ".join(p for p in parts if p)).strip())
    text = "\n".join(line for line in lines if line).strip()
    return text, lang or _lang_of(text)


def _card_action(event_id: str, ev: dict[str, Any]) -> Incoming | None:
    chat = _str(ev, "context", "open_chat_id")
    value = ev.get("action", {}).get("value") if isinstance(ev.get("action"), dict) else None
    data = value.get("d") if isinstance(value, dict) else None
    if not chat or not isinstance(data, str) or len(data.encode()) > 64:
        return None
    user = _str(ev, "operator", "open_id")
    return Incoming(event_id, lark(chat), ButtonPressed(data, lark(user) if user else ""), None)
