"""Bot settings shared by every channel (pydantic-settings: environment first, `.env` too)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conversation import identity


class ConversationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOT_", env_file=".env", extra="ignore")

    # Channel-qualified ids (tg:42, lark:ou_…); a bare number is a Telegram user.
    admin_ids: Annotated[frozenset[str], NoDecode] = frozenset()
    # The modes the service accepts, offered as buttons (comma-separated; the first is the default).
    modes: Annotated[tuple[str, ...], NoDecode] = ("fast", "standard", "batch")
    media_dir: Path = Path("./media")
    local_path_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)  # empty: disabled
    pending_ttl_seconds: int = Field(3600, gt=0)
    max_download_bytes: int = Field(50 * 1024 * 1024, gt=0)
    url_timeout_seconds: float = Field(30.0, gt=0)
    intake_slots: int = Field(64, ge=1, le=10_000)  # most files downloaded/read/uploaded/priced at once
    watch_max_seconds: int = Field(6 * 3600, gt=0)
    poll_min_seconds: float = Field(5.0, gt=0)
    poll_max_seconds: float = Field(45.0, gt=0)
    progress_edit_seconds: float = Field(3.0, ge=0)
    watch_lease_seconds: float = Field(30.0, gt=0)  # a crashed watcher's jobs are due again after this
    # A replica that has not beaten its heartbeat for this long is dead: others resume its chats.
    replica_lease_seconds: float = Field(10.0, gt=0)
    redis_prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,32}$")  # default: bjb
    redis_shards: int | None = Field(None, ge=1, le=1024)  # watcher schedule shards; default 8
    # Results on request: images read per request, and the ZIP of images at most this large
    # (Feishu takes files up to 30 MB, a Telegram bot up to 50 MB); past it, links only.
    results_max_images: int = Field(1000, gt=0, le=100_000)
    results_zip_max_bytes: int = Field(30 * 1024 * 1024, gt=0)
    results_max_bytes: int = Field(4 * 1024**3, gt=0)  # a job's results file, on disk while it is read
    # Who may use the bot (channel-qualified ids; a bare number is Telegram's). Both empty:
    # everyone. Admins always may; a chat on the list lets everyone in it.
    allowed_users: Annotated[frozenset[str], NoDecode] = frozenset()
    allowed_chats: Annotated[frozenset[str], NoDecode] = frozenset()
    # Budgets in the service's unit (the precheck's estimate), per UTC day and month; unset:
    # no limit. Admins set them per id with /budget (kept in Redis).
    budget_user_day: float | None = Field(None, ge=0)
    budget_user_month: float | None = Field(None, ge=0)
    budget_chat_day: float | None = Field(None, ge=0)
    budget_chat_month: float | None = Field(None, ge=0)
    budget_bills_failed: bool = False  # the service bills failed records: they are not given back
    # An estimate above this waits for an admin's approval (unset: none does).
    approval_threshold: float | None = Field(None, ge=0)
    approval_ttl_seconds: int = Field(86400, gt=0, le=30 * 86400)
    admin_chat: str | None = None  # where approvals go; unset: each admin's private chat
    # The agents' API alone (batchjob-bot --api) listens here; with a channel, on its server.
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=1, le=65535)
    api_progress_seconds: float = Field(10.0, gt=0)  # progress callbacks at most this often
    # Tests only: let URL fetching reach 127.0.0.1. Unsafe (SSRF) anywhere else.
    unsafe_allow_loopback_urls: bool = False

    @field_validator("admin_ids", "allowed_users", "allowed_chats", mode="before")
    @classmethod
    def _ids(cls, v: object) -> object:
        return identity.qualify_all(v)

    @field_validator("admin_chat", mode="before")
    @classmethod
    def _chat(cls, v: object) -> object:
        return identity.qualify(v) if isinstance(v, int | str) and str(v).strip() else None

    @property
    def restricted(self) -> bool:
        return bool(self.allowed_users or self.allowed_chats)

    def allows(self, user: str, chat: str) -> bool:
        """May this user, in this chat, use the bot? (ids channel-qualified)"""
        if not self.restricted or user in self.admin_ids or chat.startswith(f"{identity.API}:"):
            return True  # (an API key is the operator's own grant)
        return user in self.allowed_users or chat in self.allowed_chats

    @field_validator("modes", mode="before")
    @classmethod
    def _modes(cls, v: object) -> object:
        if isinstance(v, str):
            v = tuple(m.strip().lower() for m in v.split(",") if m.strip())
        if not v or not all(re.fullmatch(r"[a-z0-9_-]{1,24}", m) for m in v):  # type: ignore[union-attr]
            raise ValueError("BOT_MODES: comma-separated mode names (letters, digits, - and _)")
        return v

    @field_validator("local_path_roots", mode="before")
    @classmethod
    def _roots(cls, v: object) -> object:
        if isinstance(v, str):
            return [p for p in v.split(":") if p.strip()]
        return v
