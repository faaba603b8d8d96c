"""A fake Telegram Bot API server for end-to-end tests (real HTTP on 127.0.0.1).

Faithful where the bot depends on it: `{"ok": …, "result"|"description"}` envelopes,
long-poll getUpdates honouring offset and timeout, getFile plus file download (400 "file is
too big" past 20 MB), sendMessage / editMessageText ("message is not modified" on an
unchanged edit) / sendDocument (multipart) / answerCallbackQuery / setMyCommands /
setWebhook / deleteWebhook, and injected errors (429 with retry_after, 5xx, 400).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.e2e.served import Served

TOKEN = "123456:TEST-token-aBcDeF"
BOT = {
    "id": 999,
    "is_bot": True,
    "first_name": "Batch",
    "username": "batchjob_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
DOWNLOAD_LIMIT = 20 * 1024 * 1024


@dataclass
class Sent:
    chat_id: int
    message_id: int
    text: str
    markup: Any = None
    edits: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)


class FakeTelegram(Served):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closing = False
        self.updates: list[dict[str, Any]] = []
        self.pushed: list[float] = []
        self.update_ids = itertools.count(1)
        self.msg_ids = itertools.count(1000)
        self.messages: list[Sent] = []
        self.documents: list[tuple[int, str, bytes]] = []
        self.albums: list[tuple[int, list[tuple[bytes, str]]]] = []  # (chat, [(image, caption)])
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: dict[str, tuple[bytes, int]] = {}  # file_id -> (content, declared size)
        self.failures: dict[str, list[tuple[int, str, int | None]]] = {}
        self.delays: dict[str, list[float]] = {}  # method -> answer delays (the request is served first)
        self.sends: list[tuple[float, int]] = []  # (time, chat) of every send and edit, for flood checks
        super().__init__()
        self.api_base = self.url + "/bot"
        self.file_base = self.url + "/file/bot"
        app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._method, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self._file, methods=["GET"]),
            ]
        )
        self.serve(app)

    def stop(self) -> None:
        self.closing = True  # open long polls answer at once
        super().stop()

    # --- what users do ---------------------------------------------------------------------

    @staticmethod
    def user(uid: int, lang: str = "en") -> dict[str, Any]:
        return {"id": uid, "is_bot": False, "first_name": f"U{uid}", "language_code": lang}

    @staticmethod
    def chat(chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "type": "private" if chat_id > 0 else "group", "title": "g"}

    def _push(self, update: dict[str, Any]) -> int:
        with self.lock:
            update["update_id"] = next(self.update_ids)
            self.updates.append(update)
            self.pushed.append(time.monotonic())
            return update["update_id"]

    def flood_breaches(self, private_s: float = 1.0, group_per_min: int = 20, global_per_s: int = 30) -> int:
        """Sends that broke a limit: per private chat, per group, or overall (small clock slack)."""
        return sum(self.flood_breaches_by_kind(private_s, group_per_min, global_per_s).values())

    def flood_breaches_by_kind(
        self, private_s: float = 1.0, group_per_min: int = 20, global_per_s: int = 30
    ) -> dict[str, int]:
        slack = 0.02
        with self.lock:
            sends = sorted(self.sends)
        breaches = {"chat": 0, "group": 0, "global": 0}
        last: dict[int, float] = {}
        group: dict[int, list[float]] = {}
        for i, (t, chat) in enumerate(sends):
            if chat > 0:
                if chat in last and t - last[chat] < private_s - slack:
                    breaches["chat"] += 1
                last[chat] = t
            else:
                window = [x for x in group.get(chat, []) if t - x < 60 - slack]
                if len(window) >= group_per_min:
                    breaches["group"] += 1
                group[chat] = [*window, t]
            j = i - global_per_s
            if j >= 0 and t - sends[j][0] < 1.0 - slack:
                breaches["global"] += 1
        return breaches

    def _message(self, chat_id: int, user: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {
            "message_id": next(self.msg_ids),
            "date": int(time.time()),
            "chat": self.chat(chat_id),
            "from": user,
            **fields,
        }

    def send_text(self, chat_id: int, user: dict[str, Any], text: str, **extra: Any) -> dict[str, Any]:
        update = {"message": self._message(chat_id, user, text=text, **extra)}
        self._push(update)
        return update

    def send_document(
        self,
        chat_id: int,
        user: dict[str, Any],
        path: Path,
        caption: str | None = None,
        declared_size: int | None = None,
    ) -> dict[str, Any]:
        data = path.read_bytes()
        file_id = f"doc{len(self.files) + 1}_{path.name}"
        size = declared_size if declared_size is not None else len(data)
        self.files[file_id] = (data, size)
        doc = {"file_id": file_id, "file_unique_id": file_id + "u", "file_name": path.name, "file_size": size}
        fields: dict[str, Any] = {"document": doc}
        if caption:
            fields["caption"] = caption
        update = {"message": self._message(chat_id, user, **fields)}
        self._push(update)
        return update

    def callback(self, chat_id: int, user: dict[str, Any], data: str, message_id: int = 1) -> dict[str, Any]:
        """A button press as an update's body (without its update_id)."""
        message = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": self.chat(chat_id),
            "text": "x",
        }
        return {
            "callback_query": {
                "id": f"cb{next(self.msg_ids)}",
                "from": user,
                "chat_instance": "ci",
                "data": data,
                "message": message,
            }
        }

    def press(self, chat_id: int, user: dict[str, Any], data: str, message_id: int = 1) -> None:
        self._push(self.callback(chat_id, user, data, message_id))

    def delay(self, method: str, seconds: float, times: int = 1) -> None:
        """Serve the next `times` calls of `method`, then answer only after `seconds` (a timeout)."""
        with self.lock:
            self.delays.setdefault(method, []).extend([seconds] * times)

    def fail(
        self, method: str, status: int, description: str, retry_after: int | None = None, times: int = 1
    ) -> None:
        with self.lock:
            self.failures.setdefault(method, []).extend([(status, description, retry_after)] * times)

    # --- what the bot did ------------------------------------------------------------------

    def texts(self, chat_id: int | None = None) -> list[str]:
        """The messages sent, as first sent."""
        with self.lock:
            return [m.text for m in self.messages if chat_id is None or m.chat_id == chat_id]

    def shown(self, chat_id: int | None = None) -> list[str]:
        """Every text the chat has shown: each message as sent and after each edit."""
        with self.lock:
            return [
                t
                for m in self.messages
                if chat_id is None or m.chat_id == chat_id
                for t in (m.text, *m.edits)
            ]

    def buttons(self, chat_id: int) -> list[tuple[str, str]]:
        with self.lock:
            for m in reversed(self.messages):
                if m.chat_id == chat_id and m.markup:
                    return [
                        (b["text"], b.get("callback_data") or b.get("url", ""))
                        for row in m.markup["inline_keyboard"]
                        for b in row
                    ]
        return []

    def pending_updates(self) -> int:
        with self.lock:
            return len(self.updates)

    # --- the API ---------------------------------------------------------------------------

    async def _params(self, request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if "application/json" in ctype:
            body = await request.body()
            return json.loads(body) if body else {}
        form = await request.form()
        out: dict[str, Any] = {}
        for k, v in form.multi_items():
            if hasattr(v, "read"):
                out[k] = (v.filename, await v.read())
            else:
                try:
                    out[k] = json.loads(v)
                except ValueError:
                    out[k] = v
        return out

    @staticmethod
    def _ok(result: Any) -> Response:
        return JSONResponse({"ok": True, "result": result})

    @staticmethod
    def _err(status: int, description: str, retry_after: int | None = None) -> Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        return JSONResponse(body, status_code=status)

    async def _method(self, request: Request) -> Response:
        if request.path_params["token"] != TOKEN:
            return self._err(401, "Unauthorized")
        method = request.path_params["method"]
        params = await self._params(request)
        with self.lock:
            self.calls.append((method, params))
            queued = self.failures.get(method)
            failure = queued.pop(0) if queued else None
        if failure is not None:
            return self._err(*failure)
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            return self._ok(True)
        response = await handler(params)
        with self.lock:
            queued_delay = self.delays.get(method)
            pause = queued_delay.pop(0) if queued_delay else 0.0
        if pause and not self.closing:
            await asyncio.sleep(pause)
        return response

    async def _m_getMe(self, p: dict[str, Any]) -> Response:
        return self._ok(BOT)

    async def _m_getUpdates(self, p: dict[str, Any]) -> Response:
        offset = int(p.get("offset") or 0)
        timeout = float(p.get("timeout") or 0)
        limit = int(p.get("limit") or 100)
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if offset:
                    self.updates = [u for u in self.updates if u["update_id"] >= offset]  # confirmed
                ready = self.updates[:limit]
            if ready or time.monotonic() >= deadline or self.closing:
                return self._ok(ready)
            await asyncio.sleep(0.02)

    def _sent(self, chat_id: int, text: str, markup: Any) -> Response:
        with self.lock:
            mid = next(self.msg_ids)
            self.messages.append(Sent(chat_id, mid, text, markup))
            self.sends.append((time.monotonic(), chat_id))
        return self._ok(
            {
                "message_id": mid,
                "date": int(time.time()),
                "chat": self.chat(chat_id),
                "from": BOT,
                "text": text,
            }
        )

    def _bad_markup(self, markup: Any) -> Response | None:
        """As the Bot API checks an inline keyboard: each button has exactly one of
        callback_data (1-64 bytes) and url (http, https or tg)."""
        for row in (markup or {}).get("inline_keyboard") or []:
            for b in row:
                kinds = [k for k in ("callback_data", "url") if k in b]
                if len(kinds) != 1:
                    return self._err(400, "Bad Request: can't parse inline keyboard button")
                if "url" in b and not str(b["url"]).startswith(("http://", "https://", "tg://")):
                    return self._err(400, "Bad Request: BUTTON_URL_INVALID")
                if "callback_data" in b and not 1 <= len(str(b["callback_data"]).encode()) <= 64:
                    return self._err(400, "Bad Request: BUTTON_DATA_INVALID")
        return None

    async def _m_sendMessage(self, p: dict[str, Any]) -> Response:
        if (bad := self._bad_markup(p.get("reply_markup"))) is not None:
            return bad
        return self._sent(int(p["chat_id"]), str(p["text"]), p.get("reply_markup"))

    async def _m_editMessageText(self, p: dict[str, Any]) -> Response:
        chat_id, mid, text = int(p["chat_id"]), int(p["message_id"]), str(p["text"])
        if (bad := self._bad_markup(p.get("reply_markup"))) is not None:
            return bad
        with self.lock:
            msg = next((m for m in self.messages if m.chat_id == chat_id and m.message_id == mid), None)
            if msg is None:
                return self._err(400, "Bad Request: message to edit not found")
            current = msg.edits[-1] if msg.edits else msg.text
            if current == text and msg.markup == p.get("reply_markup"):
                return self._err(
                    400,
                    "Bad Request: message is not modified: specified new message content and "
                    "reply markup are exactly the same as a current content",
                )
            msg.edits.append(text)
            msg.markup = p.get("reply_markup")  # an edit without a keyboard removes it
            self.sends.append((time.monotonic(), chat_id))
        return self._ok(
            {"message_id": mid, "date": int(time.time()), "chat": self.chat(chat_id), "text": text}
        )

    async def _m_sendDocument(self, p: dict[str, Any]) -> Response:
        name, data = p["document"] if isinstance(p["document"], tuple) else ("file", b"")
        with self.lock:
            self.documents.append((int(p["chat_id"]), name, data))
            self.sends.append((time.monotonic(), int(p["chat_id"])))  # a message: counts in the limits
            mid = next(self.msg_ids)
        return self._ok(
            {
                "message_id": mid,
                "date": int(time.time()),
                "chat": self.chat(int(p["chat_id"])),
                "document": {"file_id": "sent", "file_unique_id": "sentu", "file_name": name},
            }
        )

    def _photo_message(self, chat: int, caption: str) -> dict[str, Any]:
        return {
            "message_id": next(self.msg_ids),
            "date": int(time.time()),
            "chat": self.chat(chat),
            "photo": [{"file_id": "p", "file_unique_id": "pu", "width": 1, "height": 1}],
            "caption": caption,
        }

    async def _m_sendPhoto(self, p: dict[str, Any]) -> Response:
        chat = int(p["chat_id"])
        _, data = p["photo"] if isinstance(p["photo"], tuple) else ("photo", b"")
        with self.lock:
            self.albums.append((chat, [(data, str(p.get("caption") or ""))]))
            self.sends.append((time.monotonic(), chat))
            return self._ok(self._photo_message(chat, str(p.get("caption") or "")))

    async def _m_sendMediaGroup(self, p: dict[str, Any]) -> Response:
        """2-10 photos, each uploaded as `attach://<name>`: one album, one message per photo."""
        chat, media = int(p["chat_id"]), p.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            return self._err(400, "Bad Request: wrong number of media")
        photos = []
        for item in media:
            ref = str(item.get("media", ""))
            upload = p.get(ref.removeprefix("attach://")) if ref.startswith("attach://") else None
            if item.get("type") != "photo" or not isinstance(upload, tuple):
                return self._err(400, "Bad Request: media must be uploaded photos")
            photos.append((upload[1], str(item.get("caption") or "")))
        with self.lock:
            self.albums.append((chat, photos))
            self.sends.append((time.monotonic(), chat))
            return self._ok([self._photo_message(chat, caption) for _, caption in photos])

    async def _m_getFile(self, p: dict[str, Any]) -> Response:
        file_id = str(p["file_id"])
        if file_id not in self.files:
            return self._err(400, "Bad Request: invalid file_id")
        size = self.files[file_id][1]
        if size > DOWNLOAD_LIMIT:
            return self._err(400, "Bad Request: file is too big")
        return self._ok(
            {
                "file_id": file_id,
                "file_unique_id": file_id + "u",
                "file_size": size,
                "file_path": f"documents/{file_id}",
            }
        )

    async def _file(self, request: Request) -> Response:
        if request.path_params["token"] != TOKEN:
            return Response(status_code=401)
        file_id = request.path_params["path"].rsplit("/", 1)[-1]
        if file_id not in self.files:
            return Response(status_code=404)
        return Response(self.files[file_id][0], media_type="application/octet-stream")
