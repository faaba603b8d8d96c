"""Channel-qualified identities of chats, users and channel files: `tg:42`, `lark:oc_…`.

Every id the conversation keeps names its channel, so one store, watcher and admin list
serve several channels. Ids written before channels were named are bare Telegram integers
("42", "-1001…"), and a Telegram file handle is bare too: a bare id means Telegram. Telegram
chats keep their old key names (`{chat:42}`), so a deployment's state is read as it is
across the upgrade; the other channels' chats are keyed by their qualified id.
"""

from __future__ import annotations

TELEGRAM = "tg"
LARK = "lark"
CONSOLE = "cli"
API = "api"  # agents over the HTTP API: a submission is a chat (api:sub_…), a key a user (api:key_…)
CHANNELS = (TELEGRAM, LARK, CONSOLE, API)


def qualify(raw: int | str) -> str:
    """The qualified form of an id, bare (Telegram) or already qualified; "" stays ""."""
    s = str(raw).strip()
    if not s or s == "0":
        return ""
    head, sep, rest = s.partition(":")
    if sep and head in CHANNELS and rest:
        return s
    return f"{TELEGRAM}:{s}"


def channel_of(qualified: str) -> str:
    return qualify(qualified).partition(":")[0]


def native(qualified: str) -> str:
    """The channel's own id (Telegram's integer as text, Feishu's `oc_…`)."""
    return qualify(qualified).partition(":")[2]


def key_part(chat: int | str) -> str:
    """How a chat is named inside Redis keys: Telegram's as before, others qualified."""
    q = qualify(chat)
    channel, _, own = q.partition(":")
    return own if channel == TELEGRAM else q


def qualify_all(raw: object) -> frozenset[str]:
    """A set of ids from settings: "42, lark:ou_x" or an iterable; bare numbers are Telegram's."""
    items = raw.replace(";", ",").split(",") if isinstance(raw, str) else raw
    if isinstance(items, int):
        items = [items]
    return frozenset(q for q in (qualify(x) for x in items) if q)  # type: ignore[union-attr]
