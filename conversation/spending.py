"""Spending, performed: budgets reserved before a submit and settled when its job ends,
approvals asked of the admins and decided once, /budget, /audit, and the admins' notice of
a short balance (once per episode). The rules are in `conversation.spending_rules` (pure).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import locales
from batchjob import format_amount
from batchjob.models import Job
from conversation import budgets
from conversation.approvals import Approval, Approvals
from conversation.audit import Audit
from conversation.budgets import Budgets, Defaults
from conversation.events import Event, Reconciled, ServiceFailed, Submit, Submitted
from conversation.identity import qualify
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
from conversation.store import now_ms

if TYPE_CHECKING:
    from conversation.runner import Runner

log = logging.getLogger("conversation.spending")

EPISODE_END_EVERY_S = 1.0
SHORT_EPISODE_S = 86400  # a shortfall told to the admins is not told again for a day, unless it ended
DECIDED = ("approved", "rejected", "expired")


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC")


class Spending:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        s = self.settings = runner.settings
        r, k = runner.store.r, runner.store.k
        defaults = Defaults(
            s.budget_user_day,
            s.budget_user_month,
            s.budget_chat_day,
            s.budget_chat_month,
            s.approval_threshold,
        )
        self.budgets = Budgets(r, k, defaults)
        self._ended_at: float | None = None  # when this replica last ended a shortfall episode
        self.clock = time.monotonic
        self.approvals = Approvals(r, k)
        self.audit = Audit(r, k)
        self.r, self.k = r, k

    def admin_chats(self) -> list[str]:
        if self.settings.admin_chat:
            return [self.settings.admin_chat]
        return sorted(self.settings.admin_ids)  # a user's id is their private chat's

    async def _lang(self, chat: str) -> str:
        return (await self.runner.store.load(chat)).lang

    async def _say(self, chat: str, lang: str, key: str, **params: Any) -> None:
        await self.runner._safe_send(chat, locales.t(lang, key, **params))

    # --- budgets around a submit ------------------------------------------------------------

    async def before_submit(self, chat_id: str, e: Submit) -> Event | None:
        """None: reserved, go on. Else the event that says why not."""
        user = e.user or chat_id
        if e.cost is None and not e.approved and self.budgets.defaults.approval is not None:
            return ApprovalNeeded(self.budgets.defaults.approval)  # no estimate: an admin decides
        now = datetime.now(UTC)
        out = await self.budgets.reserve(
            e.intent_id, user, chat_id, e.cost or 0.0, check_approval=not e.approved, now=now
        )
        if out.ok:
            return None
        if out.approval is not None:
            return ApprovalNeeded(out.approval)
        return OverBudget(out.scope, out.period, out.limit, out.used, _when(budgets.renews(now, out.period)))

    async def after_submit(self, chat_id: str, e: Submit, result: Event) -> None:
        if isinstance(result, Submitted):
            cost = format_amount(e.cost) if e.cost is not None else "?"
            detail = f"{result.job_id} · {e.record_count} rows · {e.model} {e.mode} · {cost}"
            await self.audit.record("submit", e.user or chat_id, detail=detail)
        elif isinstance(result, ServiceFailed) and result.kind != "unknown":
            await self.budgets.release(e.intent_id)  # refused: nothing was made

    async def after_reconcile(self, intent_id: str, result: Event) -> None:
        if isinstance(result, Reconciled) and result.job_id is None and intent_id:
            await self.budgets.release(intent_id)

    async def settle(self, job: Job, rec: dict[str, str]) -> None:
        """A job ended: what it did not run (and its failed records, when those are not
        billed) goes back to the budgets it was reserved against, once."""
        intent = rec.get("intent") or ""
        total = job.total or int(rec.get("count") or 0)
        if not intent or not total or job.completed is None:
            return  # counts unknown: nothing is given back rather than too much
        billed = job.completed + ((job.failed or 0) if self.settings.budget_bills_failed else 0)
        await self.budgets.settle(intent, max(0.0, 1.0 - billed / total), rec.get("res", ""))

    # --- effects ----------------------------------------------------------------------------

    async def perform(self, chat_id: str, state: ChatState, effect: Any) -> Event | None:
        lang = state.lang
        match effect:
            case AskApproval():
                await self._ask(chat_id, lang, effect)
            case Decide():
                await self._decide(chat_id, lang, effect)
            case BudgetCommand():
                await self._budget(chat_id, lang, effect)
            case ShowAudit(count=count, user=user):
                entries = await self.audit.last(count, user)
                if not entries:
                    await self._say(chat_id, lang, "audit.empty")
                    return None
                lines = [locales.t(lang, "audit.header", count=len(entries))]
                for en in entries:
                    at = datetime.fromtimestamp(en.at_ms / 1000, UTC).strftime("%m-%d %H:%M")
                    lines.append(
                        locales.t(
                            lang,
                            "audit.line",
                            at=at,
                            kind=locales.t(lang, f"audit.kind.{en.kind}"),
                            user=en.user,
                            by=en.by,
                            detail=en.detail,
                        )
                    )
                await self.runner._safe_send(chat_id, "\n".join(lines))
            case ShortfallNotice():
                self._ended_at = None  # an episode may begin: the next sufficient check ends it
                if await self.r.set(self.k.balance_short, "1", nx=True, ex=SHORT_EPISODE_S):
                    for admin in self.admin_chats():
                        alang = await self._lang(admin)
                        params = {
                            "current": effect.current,
                            "required": effect.required,
                            "currency": effect.currency,
                        }
                        text = locales.t(alang, "balance.admin_notice", **params)
                        if effect.recharge_url:
                            text += "\n" + locales.t(alang, "error.balance_topup", url=effect.recharge_url)
                        await self.runner._safe_send(admin, text)
        return None

    async def balance_sufficient(self) -> None:
        """A precheck found the balance sufficient: the shortfall episode is over. Ended at
        most once a second per replica (a burst of prechecks would each delete it): one begun
        by another replica within that second ends with the next sufficient check after it."""
        now = self.clock()
        if self._ended_at is not None and now - self._ended_at < EPISODE_END_EVERY_S:
            return
        await self.r.delete(self.k.balance_short)
        self._ended_at = now

    async def _ask(self, chat_id: str, lang: str, e: AskApproval) -> None:
        now = now_ms()
        ttl = self.settings.approval_ttl_seconds
        cost = format_amount(e.cost) if e.cost is not None else "?"
        created = await self.approvals.ask(
            e.approval_id,
            now + ttl * 1000,
            chat=chat_id,
            user=e.user,
            filename=e.filename[:100],
            rows=e.rows,
            model=e.model,
            mode=e.mode,
            cost=cost,
            currency=e.currency,
        )
        if not created:
            return  # asked already (this effect carried on after a restart)
        await self.audit.record(
            "approval_asked", e.user, detail=f"{e.approval_id} · {e.filename[:60]} · {cost}"
        )
        rec = await self.approvals.get(e.approval_id)
        assert rec is not None
        sent: list[tuple[str, str, str]] = []
        for admin in self.admin_chats():
            alang = await self._lang(admin)
            text = self._admin_text(alang, rec, ttl)
            buttons = [
                [
                    (locales.t(alang, "btn.approve"), f"ap:y:{rec.id}"),
                    (locales.t(alang, "btn.reject"), f"ap:n:{rec.id}"),
                ]
            ]
            mid = await self.runner._safe_send(admin, text, buttons)
            if mid is not None:
                sent.append((admin, str(mid), alang))
        await self.approvals.add_messages(rec.id, sent)
        decided = await self.approvals.get(rec.id)
        if decided is not None and decided.state != "waiting":
            await self._show_decided(decided)  # decided while the messages went out
        if not sent:
            log.warning("approval %s: no admin could be told", rec.id)
            await self._say(chat_id, lang, "approval.no_admin")

    def _admin_text(self, lang: str, rec: Approval, ttl_s: int | None = None) -> str:
        text = locales.t(
            lang,
            "approval.ask",
            id=rec.id,
            filename=rec.filename or "-",
            count=rec.rows,
            model=rec.model,
            mode=rec.mode,
            cost=rec.cost,
            currency=rec.currency,
            user=rec.user,
            chat=rec.chat,
        )
        if ttl_s is not None:
            text += "\n" + locales.t(lang, "approval.ask_expires", count=max(1, round(ttl_s / 3600)))
        return text

    async def _decide(self, chat_id: str, lang: str, e: Decide) -> None:
        if e.verdict == "info":
            rec = await self.approvals.get(e.approval_id)
            if rec is None:
                await self._say(chat_id, lang, "approval.unknown", id=e.approval_id)
            else:
                await self._say(chat_id, lang, f"approval.state.{rec.state}", id=rec.id, by=rec.by or "-")
            return
        d = await self.approvals.decide(e.approval_id, e.verdict, e.by, e.reason, now_ms())
        if not d.won:
            if e.verdict == "withdrawn":
                return
            key = "approval.unknown" if d.state == "missing" else f"approval.state.{d.state}"
            await self._say(chat_id, lang, key, id=e.approval_id, by=d.by or "-")
            return
        rec = await self.approvals.get(e.approval_id)
        if rec is None:
            return
        await self.audit.record(
            d.state, rec.user, e.by, f"{rec.id} · {rec.filename[:60]} · {rec.cost} · {e.reason}"
        )
        await self._show_decided(rec)
        if d.state in DECIDED:
            await self.deliver(rec)
        if e.typed:  # a button shows the decision on itself; a command is answered
            await self._say(chat_id, lang, f"approval.state.{d.state}", id=rec.id, by=rec.by or "-")

    async def _show_decided(self, rec: Approval) -> None:
        """Each admin's message shows the decision and who made it (its button says so)."""
        for admin, mid, alang in rec.messages:
            text = self._admin_text(alang, rec)
            label = locales.t(alang, f"approval.button.{rec.state}", by=rec.by or "-")
            try:
                await self.runner.channel.edit_text(admin, mid, text, [[(label, f"ap:i:{rec.id}")]])
            except Exception:  # an admin's message may be gone: the decision stands
                log.info("approval %s: admin message not updated", rec.id)

    async def deliver(self, rec: Approval) -> None:
        await self.runner.handle(rec.chat, ApprovalDecided(rec.id, rec.state, rec.by, rec.reason))
        await self.approvals.delivered(rec.id)

    async def sweep(self, now: int | None = None) -> int:
        """Expire approvals past their time and deliver decisions not known to be delivered
        (a replica died between the two). Any replica may run it, at once: decided once."""
        now = now_ms() if now is None else now
        done = 0
        for approval_id in await self.approvals.due(now):
            rec = await self.approvals.get(approval_id)
            if rec is None or rec.state == "withdrawn":
                await self.approvals.delivered(approval_id)
                continue
            if rec.state == "waiting":
                d = await self.approvals.decide(approval_id, "expired", "", "", now)
                rec = await self.approvals.get(approval_id)
                if rec is None:
                    continue
                if d.won:
                    await self.audit.record("expired", rec.user, "", rec.id)
                    await self._show_decided(rec)
            if rec.state in DECIDED:
                await self.approvals.postpone(approval_id, now)
                await self.deliver(rec)
                done += 1
        return done

    async def _budget(self, chat_id: str, lang: str, e: BudgetCommand) -> None:
        if e.action == "set":
            await self.budgets.set_limit(e.target, e.period, e.amount)
            await self.audit.record(
                "budget", e.target.split(":", 1)[1], e.by, f"{e.target} {e.period} = {e.amount}"
            )
        elif e.action == "reset":
            await self.budgets.reset(e.target)
            await self.audit.record("budget", e.target.split(":", 1)[1], e.by, f"{e.target} reset")
        scopes = [e.target] if e.target else budgets.scopes_of(qualify(e.by), chat_id)
        now = datetime.now(UTC)
        lines = [locales.t(lang, "budget.done")] if e.action != "show" else []
        for scope in scopes:
            limits, used = await self.budgets.limits(scope), await self.budgets.used(scope, now)
            kind, ident = scope.split(":", 1)
            lines.append(locales.t(lang, f"budget.head_{kind}", id=ident))
            for period in budgets.PERIODS:
                limit = limits[period]
                if limit is None:
                    lines.append(locales.t(lang, f"budget.line_open_{period}", used=used[period]))
                else:
                    lines.append(
                        locales.t(
                            lang,
                            f"budget.line_{period}",
                            used=used[period],
                            limit=limit,
                            left=round(max(limit - used[period], 0.0), 6),
                            renews=_when(budgets.renews(now, period)),
                        )
                    )
            if kind == "user" and limits["approval"] is not None:
                lines.append(locales.t(lang, "budget.line_approval", threshold=limits["approval"]))
        await self.runner._safe_send(chat_id, "\n".join(lines))
