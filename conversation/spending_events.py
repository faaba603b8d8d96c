"""Events and effects of spending: budgets, approvals of large jobs, the balance, the audit."""

from __future__ import annotations

from dataclasses import dataclass

# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalNeeded:
    """The submit's estimate is above the submitter's approval threshold: nothing reserved,
    nothing submitted."""

    threshold: float


@dataclass(frozen=True)
class OverBudget:
    """The submit's estimate does not fit a budget: nothing reserved, nothing submitted."""

    scope: str  # user:<id> | chat:<id>
    period: str  # day | month
    limit: float
    used: float
    renews: str  # ISO time (UTC) the period starts again


@dataclass(frozen=True)
class ApprovalDecided:
    """An admin's decision (or the expiry) on the chat's approval, delivered to the chat."""

    approval_id: str
    verdict: str  # approved | rejected | expired
    by: str = ""
    reason: str = ""


# --- effects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AskApproval:
    """Record the approval and send the admins one message each, with Approve / Reject."""

    approval_id: str
    user: str
    filename: str
    rows: int
    model: str
    mode: str
    cost: float | None
    currency: str


@dataclass(frozen=True)
class Decide:
    """An admin approves or rejects (or asks about, verdict "info") an approval; the
    requester withdraws it (verdict "withdrawn")."""

    approval_id: str
    verdict: str  # approved | rejected | withdrawn | info
    by: str
    reason: str = ""
    typed: bool = False  # a command (answered in words), not a button (which shows it)


@dataclass(frozen=True)
class BudgetCommand:
    """/budget: show (own or, for admins, anyone's), set, reset."""

    action: str  # show | set | reset
    target: str  # a channel-qualified user or chat id; "" the asker and this chat
    period: str = ""  # day | month | approval (set)
    amount: float = 0.0  # -1: no limit
    by: str = ""


@dataclass(frozen=True)
class ShowAudit:
    count: int
    user: str | None = None


@dataclass(frozen=True)
class ShortfallNotice:
    """The balance is short: the admins are told once per shortfall episode."""

    current: float | None
    required: float | None
    currency: str
    recharge_url: str = ""
