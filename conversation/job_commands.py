"""The chat's jobs (pure): /status, /jobs, /details, /cancel and /watch, the buttons under
job messages (j:…), the cancel confirmation (k:…) and /jobs pages (l:…). Who may do what:
everyone asks about the chat's own jobs; the submitter may cancel their job; admins may
cancel any job, list the account's and adopt a job sent elsewhere."""

from __future__ import annotations

import re

from conversation.events import (
    Adopt,
    Adopted,
    CancelJob,
    Details,
    Effect,
    JobStatus,
    ListJobs,
    Reply,
    ShowFailed,
    ShowResults,
    Watch,
)
from conversation.prompts import ask_cancel
from conversation.state import ChatState

RECENT_JOBS = 20
JOB_ID = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_STATUS_WORD = re.compile(r"[a-z_]{3,20}")
MAX_PAGE = 10_000

Result = tuple[ChatState, list[Effect]]


def remember(s: ChatState, job_id: str) -> None:
    """The job is followed in this chat and is its newest."""
    if job_id not in s.jobs:
        s.jobs.append(job_id)
    s.recent = [job_id, *[j for j in s.recent if j != job_id]][:RECENT_JOBS]


def may_cancel(s: ChatState, admins: frozenset[str], user: str, job_id: str) -> bool:
    """Admins cancel any job; a user, the jobs this chat submitted on their word."""
    return user in admins or (bool(user) and s.owners.get(job_id) == user)


def command(
    s: ChatState, name: str, args: tuple[str, ...], user: str, admins: frozenset[str]
) -> Result | None:
    """A job command's answer, or None when `name` is not one."""
    admin = user in admins
    known = bool(args) and bool(JOB_ID.match(args[0])) and (args[0] in s.recent or admin)
    if name == "status":
        if not args:
            return s, [JobStatus(None)]
        return s, [JobStatus(args[0]) if known else Reply.of("flow.unknown_job")]
    if name == "jobs":
        page, status = 1, None
        for a in args:
            if a.isdigit():
                page = min(max(1, int(a)), MAX_PAGE)
            elif _STATUS_WORD.fullmatch(a):
                status = a
        return s, [ListJobs(admin=admin, page=page, status=status if admin else None)]
    if name == "cancel":
        if not args or not JOB_ID.match(args[0]):
            return s, [Reply.of("cmd.cancel_usage")]
        if not may_cancel(s, admins, user, args[0]):
            return s, [Reply.of("cmd.cancel_refused")]
        reason = " ".join(args[1:])[:200]
        s.cancel_reasons = {**dict(list(s.cancel_reasons.items())[-9:]), args[0]: reason}
        return s, [ask_cancel(args[0], reason)]
    if name == "watch":
        if not args or not JOB_ID.match(args[0]):
            return s, [Reply.of("cmd.watch_usage")]
        if not admin:  # a job of the account, not of this chat: admins only
            return s, [Reply.of("cmd.watch_refused")]
        if args[0] in s.jobs:
            return s, [Reply.of("cmd.watch_already", job_id=args[0])]
        return s, [Adopt(args[0])]
    if name == "results":
        if not args and s.recent:  # the chat's latest job
            return s, [ShowResults(s.recent[0])]
        if not args or not JOB_ID.match(args[0]):
            return s, [Reply.of("cmd.results_usage")]
        return s, [ShowResults(args[0]) if known else Reply.of("flow.unknown_job")]
    if name == "details":
        if not args and s.recent:  # the chat's latest job
            return s, [Details(s.recent[0])]
        if not args or not JOB_ID.match(args[0]):
            return s, [Reply.of("cmd.details_usage")]
        return s, [Details(args[0]) if known else Reply.of("flow.unknown_job")]
    return None


def button(s: ChatState, parts: list[str], user: str, admins: frozenset[str]) -> Result | None:
    """A job button's answer, or None when the data is not one of them."""
    if len(parts) != 3:
        return None
    kind, action, arg = parts
    if kind == "j":
        if not JOB_ID.match(arg) or arg not in s.recent:
            return s, [Reply.of("flow.unknown_job")]
        if action == "r":
            return s, [JobStatus(arg)]
        if action == "d":
            return s, [Details(arg)]
        if action == "o":
            return s, [ShowResults(arg)]
        if action == "f":
            return s, [ShowFailed(arg)]
        if action == "x":
            if not may_cancel(s, admins, user, arg):
                return s, [Reply.of("cmd.cancel_refused")]
            return s, [ask_cancel(arg, "")]
    if kind == "o" and action.isdigit() and JOB_ID.match(arg):  # results: the next images
        if arg not in s.recent:
            return s, [Reply.of("flow.unknown_job")]
        return s, [ShowResults(arg, min(int(action), MAX_PAGE))]
    if kind == "l" and action.isdigit():  # /jobs: the next page
        admin = user in admins
        status = arg if admin and _STATUS_WORD.fullmatch(arg) else None
        return s, [ListJobs(admin=admin, page=min(int(action), MAX_PAGE) or 1, status=status)]
    if kind == "k":  # the answer to "cancel job X?": k:y:<job_id> or k:n:<job_id>
        if not may_cancel(s, admins, user, arg):
            return s, [Reply.of("cmd.cancel_refused")]
        reason = s.cancel_reasons.pop(arg, "")
        if action == "n":
            return s, [Reply.of("cmd.cancel_aborted")]
        if action == "y" and JOB_ID.match(arg):
            return s, [CancelJob(arg, reason)]
    return None


def on_adopted(s: ChatState, e: Adopted) -> Result:
    if not e.found:
        return s, [Reply.of("cmd.watch_not_found", job_id=e.job_id)]
    if e.job_id in s.jobs:
        return s, [Reply.of("cmd.watch_already", job_id=e.job_id)]
    remember(s, e.job_id)
    return s, [Watch(e.job_id, None, e.total, Reply.of("cmd.watch_adopted", job_id=e.job_id))]
