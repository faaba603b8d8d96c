"""Checking and opening a webhook delivery with the SDK's own dispatcher.

The SDK's `EventDispatcherHandler` decrypts the body (AES-256-CBC with the encrypt key),
answers the URL verification challenge, checks the verification token and the signature
(sha256 of timestamp + nonce + encrypt key + body). Its processors are synchronous, so here
they only hand the checked event back; the bot handles it asynchronously afterwards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from bot.lark.events import CARD_ACTION, MESSAGE
from bot.lark.settings import LarkSettings

log = logging.getLogger("bot.lark")

# The SDK reads these headers by their canonical names; servers hand them over lower-cased.
SIGNED_HEADERS = ("X-Lark-Request-Timestamp", "X-Lark-Request-Nonce", "X-Lark-Signature", "X-Request-Id")


@dataclass
class Opened:
    body: dict[str, Any] | None = None  # a checked event (None: refused, or a challenge)
    challenge: str | None = None


class Verifier:
    def __init__(self, settings: LarkSettings) -> None:
        import lark_oapi as lark
        from lark_oapi.core.json import JSON

        self._json = JSON
        self._got: list[Any] = []
        encrypt = settings.lark_encrypt_key.get_secret_value() if settings.lark_encrypt_key else ""
        token = (
            settings.lark_verification_token.get_secret_value() if settings.lark_verification_token else ""
        )
        self.handler = (
            lark.EventDispatcherHandler.builder(encrypt, token)
            .register_p2_im_message_receive_v1(self._got.append)
            .register_p2_card_action_trigger(self._card)
            .build()
        )

    def _card(self, data: Any) -> Any:
        from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTriggerResponse

        self._got.append(data)
        return P2CardActionTriggerResponse({})  # an empty answer: the card stays as it is

    def open(self, raw: bytes, headers: dict[str, str]) -> Opened:
        from lark_oapi.core.model import RawRequest

        req = RawRequest()
        req.uri = "/"
        req.body = raw
        lowered = {k.lower(): v for k, v in headers.items()}
        req.headers = {name: lowered.get(name.lower(), "") for name in SIGNED_HEADERS}
        self._got.clear()
        resp = self.handler.do(req)
        try:
            answer = json.loads(resp.content or b"{}")
        except ValueError:
            answer = {}
        if resp.status_code == 200 and isinstance(answer, dict) and "challenge" in answer:
            return Opened(challenge=str(answer["challenge"]))
        if resp.status_code == 200 and self._got:
            body = json.loads(self._json.marshal(self._got[0]))
            return Opened(body=body)
        if resp.status_code == 200 or "processor not found" in str(answer.get("msg", "")):
            # Checked, but no event this bot handles: acknowledged, nothing to do.
            return Opened(body={"header": {"event_type": "ignored"}})
        log.warning("webhook delivery refused: %s", str(answer.get("msg", ""))[:100])
        return Opened()


__all__ = ["CARD_ACTION", "MESSAGE", "Opened", "Verifier"]
