"""Feishu / Lark settings (pydantic-settings: environment first, `.env` too)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DOMAINS = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}
# The message-resource API serves files of at most 100 MB.
RESOURCE_LIMIT = 100 * 1024 * 1024


class LarkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    lark_app_id: str = Field(min_length=1)
    lark_app_secret: SecretStr
    # feishu (China), lark (elsewhere), or the base URL of an Open Platform (tests).
    lark_domain: str = "feishu"
    lark_mode: Literal["ws", "webhook"] = "ws"
    # Webhook mode: the encrypt key (AES-256-CBC bodies, signed requests) and the
    # verification token of the app's event subscription.
    lark_encrypt_key: SecretStr | None = None
    lark_verification_token: SecretStr | None = None
    lark_webhook_path: str = Field("/lark/events", pattern=r"^/[A-Za-z0-9/_.-]*$")
    # Groups whose files are taken without a mention of the bot (chat ids oc_…, comma-separated).
    lark_file_groups: str = ""
    # The server for webhook mode (and /healthz): the same settings as Telegram's.
    bot_listen_host: str = "0.0.0.0"
    bot_listen_port: int = Field(8080, gt=0, lt=65536)
    bot_metrics_token: SecretStr | None = None  # /metrics: this bearer token, or loopback only
    lark_timeout_seconds: float = Field(10.0, gt=0)
    lark_flood_scale: float = Field(1.0, gt=0, le=1.0)  # < 1 only for tests and benchmarks

    @model_validator(mode="after")
    def _webhook_keys(self) -> LarkSettings:
        """Webhook mode without the subscription's secrets would accept anyone's events."""
        if self.lark_mode == "webhook" and not (self.lark_encrypt_key and self.lark_verification_token):
            raise ValueError(
                "LARK_MODE=webhook needs LARK_ENCRYPT_KEY and LARK_VERIFICATION_TOKEN "
                "(the app's event subscription page shows both)"
            )
        return self

    @property
    def base_url(self) -> str:
        return DOMAINS.get(self.lark_domain.lower(), self.lark_domain).rstrip("/")

    @property
    def default_lang(self) -> str:
        """Feishu's users are mostly Chinese-speaking, Lark's not: the language before any hint."""
        return "en" if self.lark_domain.lower() == "lark" else "zh"

    @property
    def file_groups(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.lark_file_groups.split(",") if g.strip())
