"""Effects that must not be lost with the process performing them, as JSON for Redis.

The runner saves these effects with the state that asks for them (one atomic write), takes
each out just before performing it, and any replica performs what a dead one left. The
other effects need no outbox: the chat's phase says what is in flight (downloading,
uploading, submitting, …) and the recovery pass resumes it; the watcher leases its jobs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from conversation.events import Button, CancelJob, Details, Effect, JobStatus, ListJobs, Reply, SendTemplates
from conversation.spending_events import AskApproval, BudgetCommand, Decide, ShortfallNotice, ShowAudit

log = logging.getLogger("conversation.outbox")

DURABLE = (
    Reply,
    CancelJob,
    JobStatus,
    ListJobs,
    Details,
    SendTemplates,
    AskApproval,
    Decide,
    BudgetCommand,
    ShowAudit,
    ShortfallNotice,
)


def durable(effect: Effect) -> bool:
    return isinstance(effect, DURABLE)


def encode(effect: Effect) -> str:
    body: dict[str, Any]
    match effect:
        case Reply(parts=parts, buttons=buttons, document=document):
            body = {
                "parts": [[key, params] for key, params in parts],
                "buttons": [[[b.label, b.data, b.params] for b in row] for row in buttons],
                "document": [list(r) for r in document] if document is not None else None,
            }
        case _:
            body = dict(vars(effect))
    return json.dumps({"t": type(effect).__name__, **body}, ensure_ascii=False, default=str)


def decode(raw: str) -> Effect | None:
    """The effect an entry holds; None (logged) for an entry this version cannot read."""
    try:
        d = json.loads(raw)
        kind = d.pop("t")
        if kind == "Reply":
            buttons = tuple(
                tuple(Button(str(label), str(data), dict(params)) for label, data, params in row)
                for row in d["buttons"]
            )
            doc = d.get("document")
            document = tuple((str(r[0]), str(r[1]), str(r[2])) for r in doc) if doc is not None else None
            return Reply(tuple((str(k), dict(p)) for k, p in d["parts"]), buttons, document)
        cls = {c.__name__: c for c in DURABLE}[kind]
        return cls(**d)  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError) as e:
        log.warning("unreadable outbox entry dropped (%s)", type(e).__name__)
        return None
