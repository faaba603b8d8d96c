"""Per-chat state, persisted as versioned JSON in Redis."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from batchjob import DEFAULT_MODE, DEFAULT_MODEL
from conversation.identity import qualify

Phase = Literal[
    "idle",  # nothing pending
    "resolving",  # downloading / fetching / opening the input
    "awaiting_input",  # asked for a URL, a BatchJob file_id or a local path
    "inspecting",
    "awaiting_fix",  # invalid rows shown: send the valid ones, or fix the file
    "uploading",
    "awaiting_count",  # a bare file_id: how many records?
    "prechecking",
    "awaiting_confirm",  # estimate shown: confirm model + mode
    "awaiting_model",  # "change model" pressed: the next text is the model
    "awaiting_mode",
    "submitting",
    "reconciling",  # the submit's answer was lost: looking for the job
    "awaiting_approval",  # above the approval threshold: an admin decides
]

STATE_VERSION = 1


class Pending(BaseModel):
    """The one input a chat is working on."""

    token: str  # short random id; buttons carry it, so stale buttons do nothing
    created_ms: int
    filename: str = ""
    path: str | None = None  # local original
    converted: str | None = None  # canonical JSONL written by inspection
    file_id: str | None = None  # BatchJob file id
    row_count: int | None = None
    valid: int | None = None
    invalid: int | None = None
    model: str = DEFAULT_MODEL
    mode: str = DEFAULT_MODE
    model_given: bool = False  # named by the user (caption or reply): confirm without asking
    estimate_only: bool = False
    estimate: dict[str, float | int | str | bool | None] | None = None
    intent_id: str | None = None
    announced: bool = False  # "uploaded" already told to the user
    inspections: int = 0  # readings of the file started; one that never ends is not retried for ever
    # Where the input came from, so that any replica can get it again when the file is not
    # on its disk: kind "channel" (the channel's file handle), "url" or "path".
    source_kind: str = ""
    source_ref: str = ""
    owner: str = ""  # the user whose word submits it (may cancel the job), channel-qualified
    count_asked: bool = False  # awaiting_count: asked by an earlier release (else the lookup runs)
    count_source: str = ""  # message key saying where row_count came from (a bare file_id)
    count_job: str = ""  # the job that told the count, for that message
    refetched: bool = False  # got again to continue to the upload: no second report
    # Model and mode before the user changed one: restored when the service refuses the change.
    prior: tuple[str, str] | None = None
    rows: str = ""  # the user's row of each record sent (batchjob.rowmap text); "" unknown
    approved: bool = False  # an admin approved it: the threshold no longer applies
    approval_id: str = ""  # the approval it waits for (awaiting_approval)
    recheck: bool = False  # "check again" pressed: the new estimate asks, never submits
    skip_invalid: bool = False  # an agent asked for the valid rows only, whatever is invalid
    # The file's report, told with the estimate (a small file: one message for both).
    held_report: list[tuple[str, dict[str, Any]]] = Field(default_factory=list)

    @field_validator("owner", mode="before")
    @classmethod
    def _owner(cls, v: object) -> object:
        return qualify(v) if isinstance(v, int | str) else v  # a bare number: a Telegram user


class ChatState(BaseModel):
    v: int = STATE_VERSION
    phase: Phase = "idle"
    lang: str = "en"
    lang_fixed: bool = False  # set by /lang; the client language no longer applies
    pending: Pending | None = None
    jobs: list[str] = Field(default_factory=list)  # active (watched) jobs
    recent: list[str] = Field(default_factory=list)  # recent jobs of this chat, newest first
    cancel_reasons: dict[str, str] = Field(default_factory=dict)  # asked, awaiting the admin's yes
    owners: dict[str, str] = Field(default_factory=dict)  # job id -> the user who submitted it
    applied: list[str] = Field(default_factory=list)  # ids of the last events applied (redelivery)
    out_seq: int = 0  # last outbox entry number

    @field_validator("owners", mode="before")
    @classmethod
    def _owners(cls, v: object) -> object:
        # State saved before ids named their channel holds Telegram user numbers.
        return {k: qualify(u) for k, u in v.items()} if isinstance(v, dict) else v
