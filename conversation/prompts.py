"""What the bot asks and reports, built from the state (pure): the estimate and its
confirmation, the row report, the questions a chat waits on (again, after /again)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from batchjob import DEFAULT_MODE, DEFAULT_MODEL
from conversation import choices
from conversation.events import Button, Reply, ServiceFailed
from conversation.state import ChatState, Pending


def _reply(key: str, **params: Any) -> Reply:
    return Reply.of(key, **params)


def _amount(value: Any) -> float | int | None:
    """A figure of the estimate as a number (the renderer writes it for the language), or None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value, 4) if isinstance(value, float) else value
    return None


def fix_buttons(p: Pending) -> tuple[tuple[Button, ...], ...]:
    return (
        (Button("btn.valid_only", f"c:valid:{p.token}", {"count": p.valid}),),
        (Button("btn.fix", f"c:drop:{p.token}"),),
    )


def confirm_buttons(p: Pending) -> tuple[tuple[Button, ...], ...]:
    t = p.token
    rows: list[tuple[Button, ...]] = []
    est = p.estimate or {}
    if est.get("sufficient") is not False:  # no Submit the service would refuse
        rows.append((Button("btn.submit", f"c:go:{t}", {"model": p.model, "mode": p.mode}),))
    else:
        url = safe_url(est.get("recharge_url"))
        top = (Button("btn.topup", url),) if url else ()
        rows.append((*top, Button("btn.check_again", f"c:chk:{t}")))
    rows.append((Button("btn.change_model", f"c:model:{t}"), Button("btn.change_mode", f"c:mode:{t}")))
    rows.append((Button("btn.estimate_only", f"c:est:{t}"), Button("btn.drop", f"c:drop:{t}")))
    return tuple(rows)


def safe_url(v: object) -> str | None:
    """The service's top-up link, when it is one a button can open: http(s), a host, no
    spaces or control characters, not absurdly long (a channel refuses the whole message
    for one bad button)."""
    if not isinstance(v, str) or len(v) > 512 or any(c.isspace() or ord(c) < 32 for c in v):
        return None
    parts = urlsplit(v)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return None
    return v


def estimate_parts(p: Pending) -> list[tuple[str, dict[str, Any]]]:
    """The file's report held back for it, 'Uploaded' (when this flow uploaded the file) and
    the estimate, as one message."""
    est = p.estimate or {}
    parts: list[tuple[str, dict[str, Any]]] = [*p.held_report]  # a small file's report first
    p.held_report = []
    if (p.converted or p.path) and not p.announced:
        parts.append(("flow.uploaded", {"file_id": p.file_id, "count": p.row_count}))
        p.announced = True
    if p.count_source and not p.announced:
        parts.append((p.count_source, {"count": p.row_count, "file_id": p.file_id, "job_id": p.count_job}))
        p.announced = True
    parts.append(
        (
            "flow.estimate",
            {
                "count": p.row_count,
                "cost": _amount(est.get("estimated_cost")),
                "currency": est.get("currency") or "",
                "balance": _amount(est.get("balance")),
            },
        )
    )
    if est.get("sufficient") is False:
        cost, balance = est.get("estimated_cost"), est.get("balance")
        required = est.get("required") if isinstance(est.get("required"), int | float) else cost
        short = (
            required - balance
            if isinstance(required, int | float) and isinstance(balance, int | float)
            else None
        )
        parts.append(
            (
                "flow.estimate_shortfall",
                {
                    "balance": _amount(balance),
                    "required": _amount(required),
                    "shortfall": _amount(short),
                    "currency": est.get("currency") or "",
                },
            )
        )
        if isinstance(est.get("recharge_url"), str) and est["recharge_url"]:
            parts.append(("error.balance_topup", {"url": est["recharge_url"]}))
    return parts


def ask_confirm(p: Pending, parts: list[tuple[str, dict[str, Any]]]) -> Reply:
    parts = list(parts)
    if (p.estimate or {}).get("sufficient") is False:
        parts.append(("flow.confirm_short", {}))
        return Reply(tuple(parts), confirm_buttons(p))
    parts.append(
        (
            "flow.confirm",
            {
                "model": p.model,
                "mode": p.mode,
                "default_model": DEFAULT_MODEL,
                "default_mode": DEFAULT_MODE,
            },
        )
    )
    return Reply(tuple(parts), confirm_buttons(p))


def report_parts(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = report.get("rows") or {}
    parts: list[tuple[str, dict[str, Any]]] = [
        (
            "flow.report_sheet" if report.get("sheet") else "flow.report",
            {
                "format": report.get("format") or "?",
                "sheet": report.get("sheet") or "",
                "count": rows.get("total", 0),
                "valid": rows.get("valid", 0),
                "invalid": rows.get("invalid", 0),
                "skipped": rows.get("skipped", 0),
            },
        )
    ]
    used = [c["name"] for c in report.get("columns") or [] if c.get("field")]
    unused = [c["name"] for c in report.get("columns") or [] if not c.get("field")]
    if used:
        parts.append(("flow.columns_used", {"columns": used}))
    if unused:
        parts.append(("flow.columns_unused", {"columns": unused}))
    counts = report.get("warning_counts") or {}
    if counts.get("sd_weight_syntax"):
        parts.append(("flow.sd_weights", {"count": counts["sd_weight_syntax"]}))
    return parts


def error_reply(e: ServiceFailed, file_id: str | None = None) -> Reply:
    """The failure in the user's words; what already happened at the service (`file_id`:
    the file is uploaded) is said too, never "nothing happened"."""
    params = {
        "message": e.message,
        **{k: v for k, v in e.params.items() if k not in ("recharge_url", "numbers")},
    }
    parts: list[tuple[str, dict[str, Any]]] = [(f"error.{e.kind}", params)]
    if e.params.get("recharge_url"):
        parts.append(("error.balance_topup", {"url": e.params["recharge_url"]}))
    if file_id:
        parts.append(("flow.so_far_uploaded", {"file_id": file_id}))
    return Reply(tuple(parts))


def again(s: ChatState, modes: tuple[str, ...]) -> Reply:
    """The question the chat waits on, asked again (/again): after a message may have been
    lost, or simply scrolled away."""
    p = s.pending
    if p is None or not s.phase.startswith("awaiting_"):
        return _reply("flow.busy" if p is not None else "flow.nothing_pending")
    if s.phase == "awaiting_confirm":
        announced, p.announced = p.announced, True  # "uploaded" was said once: not again
        parts = estimate_parts(p)
        p.announced = announced
        return ask_confirm(p, parts)
    if s.phase == "awaiting_fix":
        return Reply((("flow.fix_or_valid", {"count": p.valid}),), fix_buttons(p))
    if s.phase == "awaiting_approval":
        return Reply(
            (("approval.still_waiting", {"id": p.approval_id}),),
            ((Button("btn.withdraw", f"c:drop:{p.token}"),),),
        )
    if s.phase == "awaiting_model":
        return choices.ask_model(p)
    if s.phase == "awaiting_mode":
        return choices.ask_mode(p, modes)
    return _reply("fallback.ask")


def ask_cancel(job_id: str, reason: str) -> Reply:
    return Reply.of(
        "cmd.cancel_confirm",
        ((Button("btn.cancel_yes", f"k:y:{job_id}"), Button("btn.cancel_no", f"k:n:{job_id}")),),
        job_id=job_id,
        reason=reason or "-",
    )
