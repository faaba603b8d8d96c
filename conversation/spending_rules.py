"""The rules of spending (pure, part of `core.step`): a job above the approval threshold
waits for an admin; a job over a budget is not submitted; a short balance can be checked
again; admins approve, reject, set budgets and read the audit trail."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from conversation import budgets, identity
from conversation.events import Button, Effect, Precheck, Reply, ServiceFailed
from conversation.flow_ops import Result, cost_of, drop, reply, submit
from conversation.prompts import ask_confirm, estimate_parts
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
from conversation.state import ChatState

if TYPE_CHECKING:
    from conversation.core import Context

_APPROVAL_ID = re.compile(r"^[0-9a-f]{4,16}$")
AUDIT_DEFAULT, AUDIT_MAX = 20, 100


def on_approval_needed(s: ChatState, e: ApprovalNeeded, ctx: Context) -> Result:
    p = s.pending
    if s.phase != "submitting" or p is None:
        return s, []
    p.intent_id = None  # nothing was reserved or posted; approval mints a new one
    p.approval_id = ctx.new_id[:12]
    s.phase = "awaiting_approval"
    cost, currency = cost_of(p), str((p.estimate or {}).get("currency") or "")
    waiting = Reply(
        (("approval.waiting", {"cost": cost, "currency": currency, "threshold": e.threshold}),),
        ((Button("btn.withdraw", f"c:drop:{p.token}"),),),
    )
    ask = AskApproval(p.approval_id, p.owner, p.filename, p.row_count or 0, p.model, p.mode, cost, currency)
    return s, [waiting, ask]


def on_over_budget(s: ChatState, e: OverBudget, ctx: Context) -> Result:
    p = s.pending
    if s.phase != "submitting" or p is None:
        return s, []
    p.intent_id = None
    s.phase = "awaiting_confirm"  # a raised budget (or a smaller choice) lets it go on
    currency = str((p.estimate or {}).get("currency") or "")
    params = {
        "period": e.period,
        "limit": e.limit,
        "used": e.used,
        "left": round(max(e.limit - e.used, 0.0), 6),
        "cost": cost_of(p),
        "currency": currency,
        "renews": e.renews,
    }
    kind = "chat" if e.scope.startswith("chat:") else "user"
    period = "month" if e.period == "month" else "day"
    return s, [Reply(((f"budget.over_{kind}_{period}", params), ("budget.ask_admin", {})))]


def on_decided(s: ChatState, e: ApprovalDecided, ctx: Context) -> Result:
    p = s.pending
    if s.phase != "awaiting_approval" or p is None or p.approval_id != e.approval_id:
        return s, []  # delivered again, or withdrawn meanwhile: decided once
    p.approval_id = ""
    if e.verdict == "approved":
        p.approved = True
        s, out = submit(s, ctx)
        return s, [reply("approval.approved_user", by=e.by), *out]
    if e.verdict == "rejected":
        if e.reason:
            return drop(s, "approval.rejected_reason", by=e.by, reason=e.reason)
        return drop(s, "approval.rejected_user", by=e.by)
    return drop(s, "approval.expired_user")


def recheck(s: ChatState) -> Result:
    """'Check again' after a shortfall: a new estimate, then the question again."""
    p = s.pending
    assert p is not None
    if not p.row_count or s.phase != "awaiting_confirm":
        return s, [reply("flow.stale_button")]
    p.recheck = True
    s.phase = "prechecking"
    return s, [Precheck(p.row_count, p.model, p.mode)]


def shortfall_notice(est: dict[str, object]) -> ShortfallNotice:
    def num(v: object) -> float | None:
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    required = (
        num(est.get("required")) if num(est.get("required")) is not None else num(est.get("estimated_cost"))
    )
    return ShortfallNotice(
        num(est.get("balance")), required, str(est.get("currency") or ""), str(est.get("recharge_url") or "")
    )


def on_submit_short(s: ChatState, e: ServiceFailed) -> Result:
    """The service refused the submit for the balance (402): nothing was made. The figures,
    a top-up link when the service gave one, and the question again (with Check again)."""
    p = s.pending
    assert p is not None
    n = e.params.get("numbers") or {}
    p.intent_id = None
    p.estimate = {
        **(p.estimate or {}),
        "sufficient": False,
        "balance": n.get("current"),
        "required": n.get("required"),
        "recharge_url": e.params.get("recharge_url") or (p.estimate or {}).get("recharge_url"),
    }
    s.phase = "awaiting_confirm"
    figures = [part for part in estimate_parts(p) if part[0] != "flow.uploaded"]
    refused = [("balance.submit_refused", {}), *figures]
    return s, [ask_confirm(p, refused), shortfall_notice(p.estimate)]


# --- admins ------------------------------------------------------------------------------


def on_button(s: ChatState, parts: list[str], user: str, ctx: Context) -> Result | None:
    """Approve / Reject / the decided button (`ap:y|n|i:<id>`), pressed in an admin's chat."""
    if not parts or parts[0] != "ap":
        return None
    verdict = {"y": "approved", "n": "rejected", "i": "info"}.get(parts[1] if len(parts) == 3 else "")
    if verdict is None or not _APPROVAL_ID.match(parts[2]):
        return s, [reply("flow.stale_button")]
    if user not in ctx.admins:
        return s, [reply("approval.not_admin")]
    return s, [Decide(parts[2], verdict, user)]


def command(s: ChatState, name: str, args: tuple[str, ...], user: str, ctx: Context) -> Result | None:
    admin = user in ctx.admins
    if name in ("approve", "reject"):
        if not admin:
            return s, [reply("approval.not_admin")]
        if not args or not _APPROVAL_ID.match(args[0].lower()):
            return s, [reply("approval.usage")]
        verdict = "approved" if name == "approve" else "rejected"
        reason = " ".join(args[1:])[:300] if name == "reject" else ""
        return s, [Decide(args[0].lower(), verdict, user, reason, typed=True)]
    if name == "budget":
        return s, [_budget(args, user, admin)]
    if name == "audit":
        if not admin:
            return s, [reply("approval.not_admin")]
        return s, [_audit(args)]
    return None


def _scope(kind: str, raw: str) -> str | None:
    if kind not in ("user", "chat") or not raw or len(raw) > 128 or any(c.isspace() for c in raw):
        return None
    return f"{kind}:{identity.qualify(raw)}"


def _budget(args: tuple[str, ...], user: str, admin: bool) -> Effect:
    """/budget · /budget user|chat ID · /budget set user|chat ID day|month|approval AMOUNT ·
    /budget reset user|chat ID (all but the first for admins)."""
    if not args:
        return BudgetCommand("show", "", by=user)
    if not admin:
        return reply("budget.admin_only")
    words = list(args)
    words[0] = words[0].lower()
    if words[0] in ("user", "chat") and len(words) == 2:
        scope = _scope(words[0], words[1])
        return BudgetCommand("show", scope, by=user) if scope else reply("budget.usage")
    if words[0] == "reset" and len(words) == 3:
        scope = _scope(words[1].lower(), words[2])
        return BudgetCommand("reset", scope, by=user) if scope else reply("budget.usage")
    if words[0] == "set" and len(words) == 5:
        scope = _scope(words[1].lower(), words[2])
        period = words[3].lower()
        periods = ("day", "month", "approval") if scope and scope.startswith("user:") else ("day", "month")
        if scope is None or period not in periods:
            return reply("budget.usage")
        amount = budgets.parse_amount(words[4])
        if amount is None:
            return reply("budget.bad_amount", value=words[4][:40])
        return BudgetCommand("set", scope, period, amount, by=user)
    return reply("budget.usage")


def _audit(args: tuple[str, ...]) -> Effect:
    """/audit [N] [user]: a first argument of digits is the count; the user as /whoami shows it."""
    count, who = AUDIT_DEFAULT, None
    rest = list(args[:2])
    if rest and rest[0].isdigit():
        count = max(1, min(int(rest.pop(0)), AUDIT_MAX))
    if rest and len(rest[0]) <= 128:
        who = identity.qualify(rest[0])
    return ShowAudit(count, who)
