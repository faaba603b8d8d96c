"""The Telegram channel over a stand-in Bot: what it sends for a text or an edit, and what
it makes of timeouts, odd answers and refusals."""

from __future__ import annotations

import httpx
import pytest
from telegram.error import TimedOut

from bot.telegram.channel import TelegramChannel
from conversation.channel import DeliveryUnknown


async def test_a_timeout_before_the_request_left_is_not_delivery_unknown():
    """No connection from the pool (or none made): the message surely did not leave, so it
    may be sent again; a read timeout means it may have arrived (DeliveryUnknown)."""

    class Bot:
        def __init__(self, cause: Exception) -> None:
            self.cause = cause

        async def do_api_request(self, endpoint, api_kwargs=None):
            raise TimedOut() from self.cause

    with pytest.raises(TimedOut):
        await TelegramChannel(Bot(httpx.PoolTimeout("pool")), max_attempts=1).send_text(1, "hi")
    with pytest.raises(TimedOut):
        await TelegramChannel(Bot(httpx.ConnectTimeout("connect")), max_attempts=1).send_text(1, "hi")
    with pytest.raises(DeliveryUnknown):
        await TelegramChannel(Bot(httpx.ReadTimeout("read")), max_attempts=1).send_text(1, "hi")


@pytest.mark.parametrize("answer", [True, {}, {"message_id": "7"}, [{"message_id": 7}]])
async def test_a_send_answered_in_another_shape_is_a_bad_request(answer):
    """Texts go out raw (no PTB Message is built): an answer that names no message id is
    an error of that send, not an AttributeError in the middle of a flow."""
    from telegram.error import BadRequest

    class Bot:
        async def do_api_request(self, endpoint, api_kwargs=None):
            assert endpoint == "send_message" and api_kwargs["text"] == "hi"
            return answer

    with pytest.raises(BadRequest):
        await TelegramChannel(Bot(), max_attempts=1).send_text("1", "hi")


async def test_a_keyboard_goes_out_as_the_bot_api_reads_it():
    """Links become url buttons, the rest callback buttons; data past 64 bytes is left out
    (Telegram refuses the whole message for it)."""
    sent = []

    class Bot:
        async def do_api_request(self, endpoint, api_kwargs=None):
            sent.append(api_kwargs)
            return {"message_id": 9}

    buttons = [[("Open", "https://example.com/x"), ("Yes", "ok:1")], [("Long", "x" * 65)]]
    assert await TelegramChannel(Bot(), max_attempts=1).send_text("1", "hi", buttons) == 9
    assert sent[0]["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Open", "url": "https://example.com/x"}, {"text": "Yes", "callback_data": "ok:1"}]
        ]
    }
    await TelegramChannel(Bot(), max_attempts=1).send_text("1", "plain")
    assert "reply_markup" not in sent[1]


async def test_editing_a_deleted_message_says_it_is_gone():
    from telegram.error import BadRequest

    from conversation.channel import MessageGone

    class Bot:
        async def do_api_request(self, endpoint, api_kwargs=None):
            assert endpoint == "edit_message_text"
            raise BadRequest("Message to edit not found")

    with pytest.raises(MessageGone):
        await TelegramChannel(Bot(), max_attempts=1).edit_text(1, 5, "hi")
