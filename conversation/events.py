"""What happens to a chat (events) and what the core asks the runner to do (effects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conversation.identity import qualify


def _qualify_user(event: Any) -> None:
    # A bare number is a Telegram user (events kept from before ids named their channel).
    object.__setattr__(event, "user_id", qualify(event.user_id))


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileReceived:
    ref: str  # the channel's handle for the file (e.g. Telegram file_id, a console path)
    filename: str
    size: int | None = None
    caption: str | None = None
    too_large: bool = False  # known before any download (channel limit)
    user_id: str = ""  # who sent it, channel-qualified (a caption may confirm: the submitter)

    def __post_init__(self) -> None:
        _qualify_user(self)


@dataclass(frozen=True)
class TextReceived:
    text: str
    user_id: str = ""

    def __post_init__(self) -> None:
        _qualify_user(self)


@dataclass(frozen=True)
class ButtonPressed:
    data: str
    user_id: str = ""

    def __post_init__(self) -> None:
        _qualify_user(self)


@dataclass(frozen=True)
class CommandReceived:
    name: str
    args: tuple[str, ...] = ()
    user_id: str = ""
    is_admin: bool = False

    def __post_init__(self) -> None:
        _qualify_user(self)


@dataclass(frozen=True)
class FileReady:
    """The input is a local file now (downloaded, fetched, or an allowed local path)."""

    path: str
    filename: str


@dataclass(frozen=True)
class ResolveFailed:
    reason: str  # too_large | download_failed | url_refused | url_failed | path_refused | ...
    detail: str = ""


@dataclass(frozen=True)
class Inspected:
    report: dict[str, Any]  # Report.to_dict(lang)
    converted: str | None  # canonical JSONL of the valid rows, when there are any
    known_rows: int | None = None


@dataclass(frozen=True)
class Uploaded:
    file_id: str
    row_count: int | None


@dataclass(frozen=True)
class Prechecked:
    estimate: dict[str, Any]


@dataclass(frozen=True)
class Submitted:
    job_id: str
    status: str = "queued"


@dataclass(frozen=True)
class ServiceFailed:
    """A call to the service failed. `step` is upload | precheck | submit | cancel | status | list."""

    step: str
    kind: str  # auth | balance | validation | not_found | conflict | unavailable | unknown
    message: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Adopted:
    """A job named by id (/watch: sent from the CLI, say), as the service knows it."""

    job_id: str
    found: bool
    total: int | None = None


@dataclass(frozen=True)
class Reconciled:
    """After an unknown submit outcome: the job found in the service's list, or None."""

    job_id: str | None


@dataclass(frozen=True)
class RowsKnown:
    """How many records `file_id` holds, and where the number comes from: "bot" (counted
    when this bot uploaded it), "job" (a job of the service on this file reports it, `job_id`)
    or None (nobody knows it: the user is not asked to count, the file is asked for)."""

    file_id: str
    count: int | None
    source: str | None = None
    job_id: str = ""


@dataclass(frozen=True)
class EffectFailed:
    """An effect raised something no rule foresaw (a bug, a disk error): never leave the chat stuck."""

    effect: str


@dataclass(frozen=True)
class Expired:
    pass


@dataclass(frozen=True)
class FileMissing:
    """A step needed the input's local file and this host does not have it (another replica
    received it, or it was cleaned up): get it again from its source."""

    step: str  # inspect | upload


@dataclass(frozen=True)
class InspectResumed:
    """A restart found the chat inspecting: the last reading of its file never finished."""


@dataclass(frozen=True)
class InputGiven:
    """An agent's submission (HTTP API, MCP): the input and every choice at once."""

    kind: str  # upload (ref: the channel's handle) | url | file_id
    ref: str
    filename: str
    model: str = ""
    mode: str = ""
    confirm: bool = False  # submit once checked and estimated (else wait for /confirm)
    estimate_only: bool = False
    skip_invalid: bool = False  # send the valid rows when some are invalid (else stop there)
    count: int = 0  # file_id: how many records it holds
    user_id: str = ""


from conversation.spending_events import (  # noqa: E402
    ApprovalDecided,
    ApprovalNeeded,
    AskApproval,
    BudgetCommand,
    Decide,
    OverBudget,
    ShortfallNotice,
    ShowAudit,
)

Event = (
    InputGiven
    | ApprovalNeeded
    | OverBudget
    | ApprovalDecided
    | FileReceived
    | TextReceived
    | InspectResumed
    | FileMissing
    | ButtonPressed
    | CommandReceived
    | FileReady
    | ResolveFailed
    | Inspected
    | Uploaded
    | Prechecked
    | Submitted
    | ServiceFailed
    | Reconciled
    | Adopted
    | Expired
)

# --- effects -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Button:
    label: str  # message key
    data: str  # callback data, at most 64 bytes
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """One message: localized parts (key, params) joined by new lines."""

    parts: tuple[tuple[str, dict[str, Any]], ...]
    buttons: tuple[tuple[Button, ...], ...] = ()
    document: tuple[tuple[str, str, str], ...] | None = None  # row errors (row, column, message) as CSV

    @staticmethod
    def of(key: str, buttons: tuple[tuple[Button, ...], ...] = (), **params: Any) -> Reply:
        return Reply(((key, params),), buttons)


@dataclass(frozen=True)
class Download:
    ref: str
    filename: str


@dataclass(frozen=True)
class FetchUrl:
    url: str


@dataclass(frozen=True)
class OpenPath:
    path: str


@dataclass(frozen=True)
class Inspect:
    path: str
    filename: str


@dataclass(frozen=True)
class Upload:
    path: str
    filename: str
    mode: str


@dataclass(frozen=True)
class Precheck:
    record_count: int
    model: str
    mode: str


@dataclass(frozen=True)
class Submit:
    intent_id: str
    file_id: str
    model: str
    mode: str
    record_count: int
    # For budgets and approvals: the estimate, who submits, and whether the approval
    # threshold is already passed (approved by an admin, or an admin's own job).
    cost: float | None = None
    user: str = ""
    approved: bool = False


@dataclass(frozen=True)
class Reconcile:
    intent_id: str
    file_id: str


@dataclass(frozen=True)
class LookupRows:
    file_id: str


@dataclass(frozen=True)
class Watch:
    """Watch a job. `announce` (when set) is sent first, with the job's buttons, and becomes
    the job's progress message: one message per job, edited until it ends."""

    job_id: str
    intent_id: str | None
    record_count: int | None
    announce: Reply | None = None
    rows: str = ""  # the user's row of each record (batchjob.rowmap), kept with the job
    cost: str = ""  # the estimate it was submitted on, for /jobs
    currency: str = ""
    source: str = ""  # where the input came from (JSON kind, ref, name): to run failed rows again


@dataclass(frozen=True)
class CancelJob:
    job_id: str
    reason: str


@dataclass(frozen=True)
class Whoami:
    """/whoami: the user's and the chat's ids (the chat's id is known where effects run)."""

    user_id: str
    admin: bool

    def __post_init__(self) -> None:
        _qualify_user(self)


@dataclass(frozen=True)
class Adopt:
    job_id: str


@dataclass(frozen=True)
class JobStatus:
    job_id: str | None  # None: every active job of the chat


@dataclass(frozen=True)
class ListJobs:
    admin: bool
    page: int = 1
    status: str | None = None


@dataclass(frozen=True)
class Details:
    job_id: str


@dataclass(frozen=True)
class ShowResults:
    """A finished job's results, asked for: album page `page`, then (first page) the files."""

    job_id: str
    page: int = 0


@dataclass(frozen=True)
class ShowFailed:
    job_id: str


@dataclass(frozen=True)
class RerunFailed:
    """Build a new input from exactly the failed rows of a job's original file (then the
    ordinary flow: report, estimate, confirmation)."""

    job_id: str


@dataclass(frozen=True)
class SendTemplates:
    pass


@dataclass(frozen=True)
class Cleanup:
    paths: tuple[str, ...]


Effect = (
    AskApproval
    | Decide
    | BudgetCommand
    | ShowAudit
    | ShortfallNotice
    | Reply
    | Download
    | FetchUrl
    | OpenPath
    | Inspect
    | Upload
    | Precheck
    | Submit
    | Reconcile
    | Watch
    | CancelJob
    | JobStatus
    | Adopt
    | Whoami
    | ListJobs
    | Details
    | SendTemplates
    | ShowResults
    | ShowFailed
    | RerunFailed
    | Cleanup
)
