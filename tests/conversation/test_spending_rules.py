"""The spending rules as tables of (phase, event) -> (phase, effects): pure, no Redis."""

from __future__ import annotations

import pytest

from conversation import core
from conversation.events import (
    ButtonPressed,
    CommandReceived,
    FileReceived,
    Precheck,
    Prechecked,
    Reply,
    ServiceFailed,
    Submit,
    TextReceived,
)
from conversation.spending_events import (
    ApprovalDecided,
    ApprovalNeeded,
    AskApproval,
    BudgetCommand,
    Decide,
    OverBudget,
    ShortfallNotice,
    ShowAudit,
)
from conversation.state import ChatState, Pending

ADMINS = frozenset({"tg:7"})
EST = {"estimated_cost": 25.0, "currency": "credits", "balance": 100.0, "sufficient": True}


def ctx(new_id="abcdef0123456789", now_ms=1_000_000):
    return core.Context(now_ms=now_ms, new_id=new_id, admins=ADMINS)


def at(phase, **pending):
    fields = {"file_id": "file_1", "row_count": 50, "owner": "tg:42", "estimate": dict(EST), **pending}
    return ChatState(phase=phase, pending=Pending(token="tok12345", created_ms=1_000_000, **fields))


def keys(effects):
    return [k for e in effects if isinstance(e, Reply) for k, _ in e.parts]


def of(effects, cls):
    return [e for e in effects if isinstance(e, cls)]


def waiting():
    s, _ = core.step(at("submitting", intent_id="i1"), ApprovalNeeded(20.0), ctx("a1b2c3d4e5f60718"))
    return s


def test_a_submit_carries_the_estimate_and_the_submitter():
    s, fx = core.step(at("awaiting_confirm"), TextReceived("ok", "42"), ctx("i9"))
    assert s.phase == "submitting"
    assert fx == [Submit("i9", "file_1", s.pending.model, s.pending.mode, 50, 25.0, "tg:42", False)]


def test_an_admins_own_job_is_submitted_as_approved():
    s, fx = core.step(at("awaiting_confirm", owner="tg:7"), TextReceived("ok", "7"), ctx("i9"))
    assert of(fx, Submit)[0].approved and s.pending.approved


def test_above_the_threshold_it_waits_for_an_admin():
    s, fx = core.step(at("submitting", intent_id="i1"), ApprovalNeeded(20.0), ctx("a1b2c3d4e5f60718"))
    assert s.phase == "awaiting_approval" and s.pending.approval_id == "a1b2c3d4e5f6"
    assert s.pending.intent_id is None  # nothing was reserved or posted
    assert keys(fx) == ["approval.waiting"]
    assert [b.data for b in fx[0].buttons[0]] == ["c:drop:tok12345"]
    assert of(fx, AskApproval) == [
        AskApproval("a1b2c3d4e5f6", "tg:42", "", 50, s.pending.model, s.pending.mode, 25.0, "credits")
    ]


def test_approved_submits_once_as_approved():
    s, fx = core.step(waiting(), ApprovalDecided("a1b2c3d4e5f6", "approved", "tg:7"), ctx("i2"))
    assert s.phase == "submitting" and keys(fx) == ["approval.approved_user"]
    assert of(fx, Submit)[0].approved and of(fx, Submit)[0].intent_id == "i2"
    # The same decision delivered again (a sweep after a kill) does nothing.
    s2, fx2 = core.step(s, ApprovalDecided("a1b2c3d4e5f6", "approved", "tg:7"), ctx("i3"))
    assert fx2 == [] and s2.phase == "submitting" and s2.pending.intent_id == "i2"


@pytest.mark.parametrize(
    ("verdict", "reason", "key"),
    [
        ("rejected", "", "approval.rejected_user"),
        ("rejected", "too big for a test", "approval.rejected_reason"),
        ("expired", "", "approval.expired_user"),
    ],
)
def test_rejected_or_expired_drops_it_without_a_submit(verdict, reason, key):
    s, fx = core.step(waiting(), ApprovalDecided("a1b2c3d4e5f6", verdict, "tg:7", reason), ctx())
    assert s.phase == "idle" and s.pending is None
    assert keys(fx) == [key] and not of(fx, Submit) and not of(fx, Decide)


def test_a_decision_for_another_approval_changes_nothing():
    s, fx = core.step(waiting(), ApprovalDecided("ffffffffffff", "approved", "tg:7"), ctx())
    assert s.phase == "awaiting_approval" and fx == []


def test_the_requester_withdraws_and_the_admins_are_told():
    s, fx = core.step(waiting(), ButtonPressed("c:drop:tok12345", "42"), ctx())
    assert s.phase == "idle" and keys(fx) == ["flow.dropped"]
    assert of(fx, Decide) == [Decide("a1b2c3d4e5f6", "withdrawn", "tg:42")]
    # Withdrawn by a new file too (it replaces the pending one).
    s, fx = core.step(waiting(), FileReceived("ref", "b.csv", 10, user_id="42"), ctx())
    assert s.phase == "resolving" and of(fx, Decide)[0].verdict == "withdrawn"


def test_waiting_outlives_the_pending_time_limit_and_text_asks_again():
    later = ctx(now_ms=1_000_000 + 10 * 3_600_000)
    s, fx = core.step(waiting(), TextReceived("hello?", "42"), later)
    assert s.phase == "awaiting_approval" and keys(fx) == ["approval.still_waiting"]


def test_over_a_budget_nothing_is_submitted_and_the_question_stays():
    e = OverBudget("user:tg:42", "day", 30.0, 10.0, "2026-12-04 00:00 UTC")
    s, fx = core.step(at("submitting", intent_id="i1"), e, ctx())
    assert s.phase == "awaiting_confirm" and s.pending.intent_id is None
    assert keys(fx) == ["budget.over_user_day", "budget.ask_admin"]
    params = fx[0].parts[0][1]
    assert params["left"] == 20.0 and params["cost"] == 25.0 and params["renews"] == "2026-12-04 00:00 UTC"
    e = OverBudget("chat:tg:-100", "month", 30.0, 10.0, "2027-01-01 00:00 UTC")
    _, fx = core.step(at("submitting", intent_id="i1"), e, ctx())
    assert keys(fx)[0] == "budget.over_chat_month"


def test_a_402_keeps_the_file_offers_top_up_and_check_again_and_notifies():
    failed = ServiceFailed(
        "submit",
        "balance",
        "insufficient balance",
        {
            "current": "1 credits",
            "required": "25 credits",
            "shortfall": "24 credits",
            "recharge_url": "https://pay.example/top-up?a=1",
            "numbers": {"current": 1.0, "required": 25.0, "currency": "credits"},
        },
    )
    s, fx = core.step(at("submitting", intent_id="i1"), failed, ctx())
    assert s.phase == "awaiting_confirm" and s.pending.file_id == "file_1"
    assert keys(fx)[0] == "balance.submit_refused" and "flow.estimate_shortfall" in keys(fx)
    [asked] = of(fx, Reply)  # one message: what happened, the figures, what to do
    datas = [b.data for row in asked.buttons for b in row]
    assert datas[:2] == ["https://pay.example/top-up?a=1", "c:chk:tok12345"]
    assert "c:go:tok12345" not in datas
    assert of(fx, ShortfallNotice) == [
        ShortfallNotice(1.0, 25.0, "credits", "https://pay.example/top-up?a=1")
    ]
    # Check again: a new estimate; when it fits, the question again — never a submit by itself.
    s, fx = core.step(s, ButtonPressed("c:chk:tok12345", "42"), ctx())
    assert s.phase == "prechecking" and fx == [Precheck(50, s.pending.model, s.pending.mode)]
    s.pending.model_given = True  # even a choice named in a caption does not submit here
    s, fx = core.step(s, Prechecked(dict(EST)), ctx())
    assert s.phase == "awaiting_confirm" and keys(fx)[0] == "balance.enough_now"
    assert not of(fx, Submit) and "c:go:tok12345" in [b.data for row in fx[0].buttons for b in row]


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://", "https://a b", "ftp://x.example/", "https://x/" + "a" * 600]
)
def test_a_top_up_link_a_button_cannot_open_is_left_out(url):
    s = at("awaiting_confirm", estimate={**EST, "sufficient": False, "recharge_url": url})
    _, fx = core.step(s, CommandReceived("again", (), "42"), ctx())
    assert next(b.data for row in fx[0].buttons for b in row) == "c:chk:tok12345"


@pytest.mark.parametrize(
    ("data", "user", "expected"),
    [
        ("ap:y:a1b2c3d4e5f6", "7", [Decide("a1b2c3d4e5f6", "approved", "tg:7")]),
        ("ap:n:a1b2c3d4e5f6", "7", [Decide("a1b2c3d4e5f6", "rejected", "tg:7")]),
        ("ap:i:a1b2c3d4e5f6", "7", [Decide("a1b2c3d4e5f6", "info", "tg:7")]),
        ("ap:y:a1b2c3d4e5f6", "8", ["approval.not_admin"]),  # a non-admin's press
        ("ap:y:../../etc", "7", ["flow.stale_button"]),  # forged
        ("ap:x:a1b2c3d4e5f6", "7", ["flow.stale_button"]),
        ("ap:y", "7", ["flow.stale_button"]),
    ],
)
def test_approval_buttons(data, user, expected):
    s, fx = core.step(ChatState(), ButtonPressed(data, user), ctx())
    got = [e for e in fx if not isinstance(e, Reply)] or keys(fx)
    assert got == expected and s.phase == "idle"


@pytest.mark.parametrize(
    ("name", "args", "user", "expected"),
    [
        ("approve", ("A1B2C3D4",), "7", Decide("a1b2c3d4", "approved", "tg:7", typed=True)),
        ("reject", ("a1b2c3d4", "not", "now"), "7", Decide("a1b2c3d4", "rejected", "tg:7", "not now", True)),
        ("reject", (), "7", "approval.usage"),
        ("approve", ("a1b2c3d4",), "8", "approval.not_admin"),
        ("budget", (), "8", BudgetCommand("show", "", by="tg:8")),
        ("budget", ("user", "8"), "7", BudgetCommand("show", "user:tg:8", by="tg:7")),
        ("budget", ("user", "8"), "8", "budget.admin_only"),
        (
            "budget",
            ("SET", "user", "lark:ou_AbC", "day", "12.5"),
            "7",
            BudgetCommand("set", "user:lark:ou_AbC", "day", 12.5, by="tg:7"),
        ),
        (
            "budget",
            ("set", "chat", "-100", "month", "none"),
            "7",
            BudgetCommand("set", "chat:tg:-100", "month", -1.0, by="tg:7"),
        ),
        (
            "budget",
            ("set", "user", "8", "approval", "40"),
            "7",
            BudgetCommand("set", "user:tg:8", "approval", 40.0, by="tg:7"),
        ),
        ("budget", ("set", "chat", "-100", "approval", "40"), "7", "budget.usage"),
        ("budget", ("set", "user", "8", "day", "-5"), "7", "budget.bad_amount"),
        ("budget", ("set", "user", "8", "day", "NaN"), "7", "budget.bad_amount"),
        ("budget", ("set", "user", "8", "week", "5"), "7", "budget.usage"),
        ("budget", ("reset", "user", "8"), "7", BudgetCommand("reset", "user:tg:8", by="tg:7")),
        ("budget", ("help",), "7", "budget.usage"),
        ("audit", (), "7", ShowAudit(20)),
        ("audit", ("500", "42"), "7", ShowAudit(100, "tg:42")),
        ("audit", (), "8", "approval.not_admin"),
    ],
)
def test_admin_commands(name, args, user, expected):
    _, fx = core.step(ChatState(), CommandReceived(name, args, user), ctx())
    got = keys(fx)[0] if isinstance(expected, str) else fx[0]
    assert got == expected
