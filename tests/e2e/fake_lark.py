"""A fake Feishu / Lark Open Platform for end-to-end tests (real HTTP on 127.0.0.1).

Faithful where the bot depends on it: `{"code", "msg", "data"}` envelopes with Feishu's error
codes (99991663 for a bad token, 230011 for a recalled message, 99991400 with HTTP 429 and
`x-ogw-ratelimit-reset` for the frequency limit), the tenant access token, bot info, message
create (text, interactive card, file) / patch (cards only) / resource download (401 without
the token) / file upload (multipart), the long connection's endpoint discovery and
WebSocket with the SDK's protobuf frames; and events the way Feishu sends them: v2 bodies,
encrypted (AES-256-CBC, key = sha256(encrypt key)) and signed (sha256 of timestamp, nonce,
encrypt key and body) for the webhook, or as frames on the long connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.e2e.served import Served

APP_ID = "cli_test_app"
APP_SECRET = "test-app-secret-xyz"
ENCRYPT_KEY = "test-encrypt-key"
VERIFICATION_TOKEN = "test-verification-token"
BOT_OPEN_ID = "ou_bot_0001"
TOKEN = "t-tenant-token-0001"


@dataclass
class Sent:
    chat_id: str
    message_id: str
    msg_type: str
    content: dict[str, Any]
    edits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return (
            _card_text(self.content) if self.msg_type == "interactive" else str(self.content.get("text", ""))
        )

    def shown(self) -> str:
        return _card_text(self.edits[-1]) if self.edits else self.text

    def buttons(self, card: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        card = card or (self.edits[-1] if self.edits else self.content)
        return [
            (a["text"]["content"], a["value"]["d"])
            for el in card.get("elements", [])
            if el.get("tag") == "action"
            for a in el["actions"]
        ]


def _card_text(card: dict[str, Any]) -> str:
    return "\n".join(el["text"]["content"] for el in card.get("elements", []) if el.get("tag") == "div")


def encrypt(body: dict[str, Any], key: str = ENCRYPT_KEY) -> bytes:
    from Crypto.Cipher import AES

    plain = json.dumps(body).encode()
    pad = 16 - len(plain) % 16
    iv = os.urandom(16)
    ct = AES.new(hashlib.sha256(key.encode()).digest(), AES.MODE_CBC, iv).encrypt(plain + bytes([pad]) * pad)
    return json.dumps({"encrypt": base64.b64encode(iv + ct).decode()}).encode()


def signed_headers(raw: bytes, key: str = ENCRYPT_KEY) -> dict[str, str]:
    ts, nonce = str(int(time.time())), os.urandom(8).hex()
    sig = hashlib.sha256((ts + nonce + key).encode() + raw).hexdigest()
    return {
        "content-type": "application/json",
        "x-lark-request-timestamp": ts,
        "x-lark-request-nonce": nonce,
        "x-lark-signature": sig,
    }


class FakeLark(Served):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.event_ids = itertools.count(1)
        self.msg_ids = itertools.count(1)
        self.file_keys = itertools.count(1)
        self.messages: list[Sent] = []
        self.uploads: list[tuple[str, bytes]] = []
        self.images: list[bytes] = []
        self.resources: dict[tuple[str, str], bytes] = {}
        self.calls: list[str] = []
        self.sends: list[tuple[float, str]] = []  # (time, chat) of every create and patch
        self.rate_limit_next = 0  # answer this many sends with the frequency limit
        self.recalled: set[str] = set()
        self.ws_queue: asyncio.Queue[bytes] | None = None
        self.ws_loop: asyncio.AbstractEventLoop | None = None
        self.ws_acks: list[int] = []  # the code of each event acknowledgement on the long connection
        super().__init__()
        api = "/open-apis"
        app = Starlette(
            routes=[
                Route(f"{api}/auth/v3/tenant_access_token/internal", self._token, methods=["POST"]),
                Route(f"{api}/bot/v3/info", self._bot_info, methods=["GET"]),
                Route(f"{api}/im/v1/messages", self._create, methods=["POST"]),
                Route(f"{api}/im/v1/messages/{{mid}}", self._patch, methods=["PATCH"]),
                Route(f"{api}/im/v1/messages/{{mid}}/resources/{{key}}", self._resource, methods=["GET"]),
                Route(f"{api}/im/v1/files", self._upload, methods=["POST"]),
                Route(f"{api}/im/v1/images", self._upload_image, methods=["POST"]),
                Route("/callback/ws/endpoint", self._endpoint, methods=["POST"]),
                WebSocketRoute("/ws", self._ws),
            ]
        )
        self.serve(app)

    # --- events as Feishu sends them ----------------------------------------------------------

    def _header(self, kind: str) -> dict[str, Any]:
        return {
            "event_id": f"ev_{next(self.event_ids):06d}",
            "event_type": kind,
            "create_time": str(int(time.time() * 1000)),
            "token": VERIFICATION_TOKEN,
            "app_id": APP_ID,
            "tenant_key": "tenant_1",
        }

    def message_event(
        self,
        chat: str,
        user: str,
        message_type: str,
        content: dict[str, Any],
        *,
        chat_type: str = "p2p",
        mention_bot: bool = False,
    ) -> dict[str, Any]:
        message_id = f"om_in_{next(self.msg_ids):06d}"
        mentions = (
            [{"key": "@_user_1", "id": {"open_id": BOT_OPEN_ID}, "name": "Batch"}] if mention_bot else []
        )
        return {
            "schema": "2.0",
            "header": self._header("im.message.receive_v1"),
            "event": {
                "sender": {"sender_id": {"open_id": user}, "sender_type": "user", "tenant_key": "tenant_1"},
                "message": {
                    "message_id": message_id,
                    "chat_id": chat,
                    "chat_type": chat_type,
                    "message_type": message_type,
                    "content": json.dumps(content, ensure_ascii=False),
                    "create_time": str(int(time.time() * 1000)),
                    "mentions": mentions,
                },
            },
        }

    def text_event(self, chat: str, user: str, text: str, **kw: Any) -> dict[str, Any]:
        return self.message_event(chat, user, "text", {"text": text}, **kw)

    def file_event(self, chat: str, user: str, name: str, data: bytes, **kw: Any) -> dict[str, Any]:
        key = f"file_v2_{next(self.file_keys):06d}"
        body = self.message_event(chat, user, "file", {"file_key": key, "file_name": name}, **kw)
        with self.lock:
            self.resources[(body["event"]["message"]["message_id"], key)] = data
        return body

    def card_event(self, chat: str, user: str, data: str, message_id: str = "om_x") -> dict[str, Any]:
        return {
            "schema": "2.0",
            "header": self._header("card.action.trigger"),
            "event": {
                "operator": {"open_id": user, "tenant_key": "tenant_1"},
                "token": "c-" + os.urandom(6).hex(),
                "action": {"value": {"d": data}, "tag": "button"},
                "context": {"open_message_id": message_id, "open_chat_id": chat},
            },
        }

    def push_ws(self, body: dict[str, Any]) -> None:
        """Deliver an event on the long connection (as a data frame)."""
        from lark_oapi.ws.pb.pbbp2_pb2 import Frame

        frame = Frame()
        for k, v in (
            ("type", "event"),
            ("message_id", body["header"]["event_id"]),
            ("sum", "1"),
            ("seq", "0"),
        ):
            h = frame.headers.add()
            h.key, h.value = k, v
        h = frame.headers.add()
        h.key, h.value = "trace_id", "trace"
        frame.service, frame.method, frame.SeqID, frame.LogID = 1, 1, 0, 0
        frame.payload = json.dumps(body).encode()
        assert self.ws_loop is not None and self.ws_queue is not None, "no long connection"
        self.ws_loop.call_soon_threadsafe(self.ws_queue.put_nowait, frame.SerializeToString())

    # --- what the bot sent ---------------------------------------------------------------------

    def texts(self, chat: str | None = None) -> list[str]:
        with self.lock:
            return [m.text for m in self.messages if chat is None or m.chat_id == chat]

    def shown(self, chat: str | None = None) -> list[str]:
        with self.lock:
            return [m.shown() for m in self.messages if chat is None or m.chat_id == chat]

    def buttons(self, chat: str) -> list[tuple[str, str]]:
        with self.lock:
            cards = [m for m in self.messages if m.chat_id == chat and m.msg_type == "interactive"]
        return cards[-1].buttons() if cards else []

    def flood_breaches(self, per_chat_s: int = 5, global_per_s: int = 50) -> int:
        slack = 0.02
        with self.lock:
            sends = sorted(self.sends)
        breaches = 0
        per_chat: dict[str, list[float]] = {}
        for i, (t, chat) in enumerate(sends):
            window = [x for x in per_chat.get(chat, []) if t - x < 1.0 - slack]
            breaches += len(window) >= per_chat_s
            per_chat[chat] = [*window, t]
            j = i - global_per_s
            breaches += j >= 0 and t - sends[j][0] < 1.0 - slack
        return breaches

    # --- the platform --------------------------------------------------------------------------

    @staticmethod
    def _err(code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=headers)

    @staticmethod
    def _ok(data: dict[str, Any] | None = None) -> Response:
        return JSONResponse({"code": 0, "msg": "success", "data": data or {}})

    @staticmethod
    def _authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def _token(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append("token")
        if body.get("app_id") != APP_ID or body.get("app_secret") != APP_SECRET:
            return self._err(10014, "app secret invalid")
        return JSONResponse({"code": 0, "msg": "ok", "tenant_access_token": TOKEN, "expire": 7200})

    async def _bot_info(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._err(99991663, "Invalid access token for authorization", 400)
        return JSONResponse({"code": 0, "msg": "ok", "bot": {"open_id": BOT_OPEN_ID, "app_name": "Batch"}})

    def _limited(self) -> Response | None:
        with self.lock:
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return self._err(
                    99991400, "request trigger frequency limit", 429, {"x-ogw-ratelimit-reset": "1"}
                )
        return None

    async def _create(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._err(99991663, "Invalid access token for authorization")
        if request.query_params.get("receive_id_type") != "chat_id":
            return self._err(230001, "invalid receive_id_type")
        if (limited := self._limited()) is not None:
            return limited
        body = await request.json()
        try:
            content = json.loads(body["content"])
        except (KeyError, TypeError, ValueError):
            return self._err(230001, "content is not a JSON string")
        msg_type, chat = body.get("msg_type"), body.get("receive_id", "")
        if msg_type not in ("text", "interactive", "file", "post") or not chat.startswith("oc_"):
            return self._err(230001, "invalid msg_type or receive_id")
        if msg_type == "interactive" and len(body["content"].encode()) > 30 * 1024:
            return self._err(230025, "card content too large")
        mid = f"om_{next(self.msg_ids):06d}"
        with self.lock:
            self.messages.append(Sent(chat, mid, msg_type, content))
            self.sends.append((time.monotonic(), chat))
        self.calls.append("create")
        return self._ok({"message_id": mid, "chat_id": chat, "msg_type": msg_type})

    async def _patch(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._err(99991663, "Invalid access token for authorization")
        mid = request.path_params["mid"]
        if mid in self.recalled:
            return self._err(230011, "The message was withdrawn.")
        with self.lock:
            sent = next((m for m in self.messages if m.message_id == mid), None)
        if sent is None:
            return self._err(230001, "invalid message_id")
        if sent.msg_type != "interactive":
            return self._err(230001, "only cards can be patched")
        if (limited := self._limited()) is not None:
            return limited
        content = json.loads((await request.json())["content"])
        with self.lock:
            sent.edits.append(content)
            self.sends.append((time.monotonic(), sent.chat_id))
        self.calls.append("patch")
        return self._ok()

    async def _resource(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._err(99991663, "Invalid access token for authorization", 401)
        key = (request.path_params["mid"], request.path_params["key"])
        if request.query_params.get("type") != "file" or key not in self.resources:
            return self._err(234003, "file not found in message", 404)
        return Response(self.resources[key], media_type="application/octet-stream")

    async def _upload(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._err(99991663, "Invalid access token for authorization")
        form = await request.form()
        upload = form.get("file")
        if (
            upload is None
            or isinstance(upload, str)
            or not form.get("file_type")
            or not form.get("file_name")
        ):
            return self._err(234001, "invalid file upload")
        data = await upload.read()
        with self.lock:
            self.uploads.append((str(form["file_name"]), data))
        return self._ok({"file_key": f"file_up_{len(self.uploads):04d}"})

    async def _upload_image(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._err(99991663, "Invalid access token for authorization")
        form = await request.form()
        upload = form.get("image")
        if upload is None or isinstance(upload, str) or form.get("image_type") != "message":
            return self._err(234001, "invalid image upload")
        data = await upload.read()
        if not data.startswith((b"\x89PNG", b"\xff\xd8\xff", b"RIFF")):
            return self._err(234011, "image type not supported")
        with self.lock:
            self.images.append(data)
            return self._ok({"image_key": f"img_v2_{len(self.images):04d}"})

    async def _endpoint(self, request: Request) -> Response:
        body = await request.json()
        if body.get("AppID") != APP_ID or body.get("AppSecret") != APP_SECRET:
            return JSONResponse({"code": 514, "msg": "auth failed"})
        ws = self.url.replace("http://", "ws://") + "/ws?device_id=dev_1&service_id=7"
        config = {"ReconnectCount": 3, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 120}
        return JSONResponse({"code": 0, "msg": "ok", "data": {"URL": ws, "ClientConfig": config}})

    async def _ws(self, websocket: WebSocket) -> None:
        from lark_oapi.ws.pb.pbbp2_pb2 import Frame

        await websocket.accept()
        self.ws_loop = asyncio.get_running_loop()
        self.ws_queue = asyncio.Queue()

        async def pump() -> None:
            assert self.ws_queue is not None
            while True:
                await websocket.send_bytes(await self.ws_queue.get())

        pumping = asyncio.create_task(pump())
        try:
            while True:
                data = await websocket.receive_bytes()
                frame = Frame()
                frame.ParseFromString(data)
                kinds = {h.key: h.value for h in frame.headers}
                if frame.method == 1 and kinds.get("type") == "event":  # an event's acknowledgement
                    with self.lock:
                        self.ws_acks.append(int(json.loads(frame.payload).get("code", 0)))
        except WebSocketDisconnect:
            pass
        finally:
            pumping.cancel()
