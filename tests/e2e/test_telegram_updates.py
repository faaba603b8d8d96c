"""Telegram updates, read from the Bot API's JSON: the events they stand for, and silence
(never an exception) for fields of a shape the API does not send."""

from __future__ import annotations

import pytest

from bot.telegram.updates import to_event
from conversation.events import ButtonPressed, CommandReceived, FileReceived, TextReceived

USER = {"id": 7, "is_bot": False, "first_name": "A", "language_code": "zh-hans"}
PRIVATE = {"id": 5, "type": "private"}
GROUP = {"id": -100, "type": "supergroup"}


def message(**fields):  # type: ignore[no-untyped-def]
    return {"update_id": 1, "message": {"message_id": 3, "date": 0, "chat": PRIVATE, "from": USER, **fields}}


def read(update, limit=20 << 20):  # type: ignore[no-untyped-def]
    return to_event(update, "batch_bot", frozenset({"tg:7"}), limit)


def test_a_document_a_command_a_text_and_a_button():
    doc = read(message(document={"file_id": "F1", "file_name": "p.csv", "file_size": 10}, caption="fast"))
    assert doc.chat_id == "tg:5" and doc.lang == "zh-hans"
    assert doc.event == FileReceived(
        ref="F1", filename="p.csv", size=10, caption="fast", too_large=False, user_id="tg:7"
    )
    big = read(message(document={"file_id": "F2", "file_size": 30 << 20}))
    assert big.event.too_large and big.event.filename == "file"
    assert read(message(text="/Cancel@batch_bot job_1")).event == CommandReceived(
        "cancel", ("job_1",), "tg:7", True
    )
    assert read(message(text="/start@other_bot")) is None  # another bot's command
    assert read(message(text="hello")).event == TextReceived("hello", "tg:7")
    assert read(message(text="hello", chat=GROUP)) is None  # not addressed to the bot in a group
    assert read(message(text="@batch_bot go", chat=GROUP)).event == TextReceived("go", "tg:7")
    reply = {"message_id": 2, "date": 0, "chat": GROUP, "from": {"id": 9, "is_bot": True, "first_name": "B"}}
    assert read(message(text="yes", chat=GROUP, reply_to_message=reply)).event == TextReceived("yes", "tg:7")
    assert read(message(photo=[{"file_id": "P"}])).hint == "tg.send_a_file"
    press = read(
        {
            "update_id": 2,
            "callback_query": {"id": "q1", "from": USER, "data": "ok:1", "message": {"chat": PRIVATE}},
        }
    )
    assert press.event == ButtonPressed("ok:1", "tg:7") and press.callback_id == "q1"


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 1, "message": "not an object"},
        {"update_id": 1, "message": {"chat": {"id": "5"}, "text": "hi"}},
        {"update_id": 1, "message": {"chat": {"id": True}, "text": "hi"}},
        {"update_id": 1, "edited_message": {"chat": PRIVATE, "text": "hi"}},
        {"update_id": 1, "callback_query": {"id": "q", "data": "ok:1", "message": None}},
        {"update_id": 1, "callback_query": []},
    ],
)
def test_an_update_without_a_chat_is_silent(update):
    got = read(update)
    assert got is None or (got.chat_id == "" and got.event is None)


@pytest.mark.parametrize(
    "fields",
    [
        {"text": 5},
        {"text": "/"},
        {"text": "hi", "from": "someone"},
        {"text": "hi", "from": {"id": "7"}},
        {"document": {"file_id": 5}},
        {"document": {"file_id": "F", "file_size": "10", "file_name": ["x"]}},
        {"document": "F"},
        {"text": "hi", "chat": {"id": -1, "type": 3}, "reply_to_message": {"from": "bot"}},
        {"caption": {"x": 1}, "document": {"file_id": "F"}},
    ],
)
def test_fields_of_another_shape_read_as_absent(fields):
    got = read(message(**fields))
    assert got is None or got.chat_id in ("tg:5", "tg:-1")  # answered or silent, never a crash
    if got is not None and isinstance(got.event, FileReceived):
        assert isinstance(got.event.ref, str) and got.event.size in (None, 10)
    if got is not None and isinstance(got.event, FileReceived) and fields.get("caption"):
        assert got.event.caption is None


def test_a_long_or_missing_button_data_only_answers_the_button():
    long = {"id": "q", "from": USER, "data": "x" * 65, "message": {"chat": PRIVATE}}
    got = read({"update_id": 3, "callback_query": long})
    assert got.event is None and got.callback_id == "q" and got.chat_id == "tg:5"
    got = read({"update_id": 3, "callback_query": {**long, "data": None}})
    assert got.event is None and got.callback_id == "q"
