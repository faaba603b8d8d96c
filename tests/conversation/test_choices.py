"""Choosing model and mode: buttons of the modes, checked replies, the service's refusal of a
choice, a shortfall without Submit, a refused submit, and a link that always starts anew."""

from __future__ import annotations

import pytest

from conversation import core
from conversation.events import (
    ButtonPressed,
    FetchUrl,
    LookupRows,
    Precheck,
    Prechecked,
    Reply,
    ServiceFailed,
    Submit,
    TextReceived,
)
from conversation.state import ChatState, Pending

MODES = ("fast", "standard", "batch")


def ctx(new_id="abcdef0123456789"):
    return core.Context(now_ms=1_000_000, new_id=new_id, modes=MODES)


def at(phase, **pending):
    p = Pending(token="tok12345", created_ms=1_000_000, file_id="file_1", row_count=2, **pending)
    return ChatState(phase=phase, pending=p)


def keys(effects):
    return [k for e in effects if isinstance(e, Reply) for k, _ in e.parts]


def buttons(effects):
    return [b for e in effects if isinstance(e, Reply) for row in e.buttons for b in row]


def test_change_mode_offers_each_mode_as_a_button_and_a_press_estimates_again():
    s, fx = core.step(at("awaiting_confirm"), ButtonPressed("c:mode:tok12345"), ctx())
    assert s.phase == "awaiting_mode"
    offered = [b.data for b in buttons(fx)]
    assert offered == [f"c:md-{m}:tok12345" for m in MODES] + ["c:back:tok12345"]
    assert next(b.label for b in buttons(fx)) == "btn.mode_current"  # fast is the current one
    s, fx = core.step(s, ButtonPressed("c:md-batch:tok12345"), ctx())
    assert s.phase == "prechecking" and fx == [Precheck(2, s.pending.model, "batch")]


@pytest.mark.parametrize("reply", ["turbo", "hello there", "ok"])
def test_a_reply_that_is_no_mode_is_refused_with_the_choices_again(reply):
    s, fx = core.step(at("awaiting_mode"), TextReceived(reply), ctx())
    assert s.phase == "awaiting_mode" and keys(fx) == ["flow.mode_unknown", "flow.ask_mode"]
    assert any(b.data == "c:md-standard:tok12345" for b in buttons(fx))
    assert not any(isinstance(e, Precheck) for e in fx)


@pytest.mark.parametrize("reply", ["dall e 3", "hello there", "ok"])
def test_a_reply_that_is_no_model_is_refused(reply):
    s, fx = core.step(at("awaiting_model"), TextReceived(reply), ctx())
    assert s.phase == "awaiting_model" and keys(fx) == ["flow.model_invalid", "flow.ask_model"]
    assert s.pending.model == Pending(token="t", created_ms=0).model  # unchanged


def test_a_model_the_service_refuses_restores_the_old_one_and_asks_again():
    s, fx = core.step(at("awaiting_model"), TextReceived("acme/not-a-model"), ctx())
    assert fx == [Precheck(2, "acme/not-a-model", "fast")]
    s, fx = core.step(s, ServiceFailed("precheck", "validation", "unknown model"), ctx())
    assert s.phase == "awaiting_model" and s.pending is not None
    assert s.pending.model == "google/gemini-2.5-flash-image"
    assert keys(fx) == ["flow.choice_refused", "flow.ask_model"]
    assert fx[0].parts[0][1]["message"] == "unknown model"


def test_a_refused_choice_named_in_a_confirming_reply_is_not_submitted_later_unasked():
    s, fx = core.step(at("awaiting_confirm"), TextReceived("acme/gone standard"), ctx())
    assert fx == [Precheck(2, "acme/gone", "standard")]
    s, fx = core.step(s, ServiceFailed("precheck", "validation", "unknown model"), ctx())
    s, fx = core.step(s, TextReceived("google/gemini-2.5-flash-image"), ctx())
    s, fx = core.step(s, Prechecked({"estimated_cost": 1.0, "sufficient": True}), ctx())
    assert s.phase == "awaiting_confirm" and not any(isinstance(e, Submit) for e in fx)


def test_back_returns_to_the_confirmation():
    s, fx = core.step(
        at("awaiting_mode", estimate={"estimated_cost": 1.0}), ButtonPressed("c:back:tok12345"), ctx()
    )
    assert s.phase == "awaiting_confirm" and "flow.confirm" in keys(fx)


def test_shortfall_shows_the_figures_and_no_submit():
    s = at("prechecking")
    est = {
        "estimated_cost": 4.0,
        "balance": 1.0,
        "sufficient": False,
        "currency": "credits",
        "recharge_url": "https://pay.example/top-up",
    }
    s, fx = core.step(s, Prechecked(est), ctx())
    assert s.phase == "awaiting_confirm"
    parts = dict(fx[0].parts)
    shortfall = parts["flow.estimate_shortfall"]
    assert shortfall == {"balance": 1.0, "required": 4.0, "shortfall": 3.0, "currency": "credits"}
    import locales

    assert "current 1, required 4, short by 3 credits" in locales.t(
        "en", "flow.estimate_shortfall", **shortfall
    )
    assert "还差 3 积分" in locales.t("zh", "flow.estimate_shortfall", **shortfall)
    assert parts["error.balance_topup"] == {"url": "https://pay.example/top-up"}
    assert "btn.submit" not in [b.label for b in buttons(fx)]
    for press in (ButtonPressed("c:go:tok12345"), TextReceived("ok")):  # an old button, a word
        s2, fx2 = core.step(s, press, ctx())
        assert s2.phase == "awaiting_confirm" and not any(isinstance(e, Submit) for e in fx2)
        assert "flow.estimate_shortfall" in keys(fx2)


def test_a_cheaper_mode_named_at_a_shortfall_is_estimated_then_submitted_when_it_fits():
    s = at("awaiting_confirm", estimate={"estimated_cost": 4.0, "balance": 1.0, "sufficient": False})
    s, fx = core.step(s, TextReceived("batch"), ctx())
    assert s.phase == "prechecking" and fx == [Precheck(2, s.pending.model, "batch")]
    s, fx = core.step(s, Prechecked({"estimated_cost": 0.5, "balance": 1.0, "sufficient": True}), ctx("i2"))
    assert s.phase == "submitting" and isinstance(fx[-1], Submit) and fx[-1].mode == "batch"


@pytest.mark.parametrize(
    "kind,after",
    [
        ("validation", "flow.submit_refused"),
        ("unavailable", "flow.submit_not_repeated"),
    ],
)
def test_a_refused_submit_says_it_was_refused(kind, after):
    s, fx = core.step(at("submitting", intent_id="i"), ServiceFailed("submit", kind, "no"), ctx())
    assert s.phase == "idle" and keys(fx)[-1] == after


@pytest.mark.parametrize("phase", ["awaiting_confirm", "awaiting_model", "awaiting_mode", "awaiting_count"])
def test_a_link_or_file_id_starts_a_new_input_whatever_was_asked(phase):
    s, fx = core.step(at(phase), TextReceived("https://example.com/prompts.csv"), ctx("newtoken00000000"))
    assert isinstance(fx[-1], FetchUrl) and s.phase == "resolving" and s.pending.token == "newtoken"
    s, fx = core.step(at(phase), TextReceived("file_abcdef12"), ctx())
    assert isinstance(fx[-1], LookupRows) and s.pending.file_id == "file_abcdef12"
