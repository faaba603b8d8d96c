"""Telegram settings (pydantic-settings: environment first, `.env` too)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile's limit on the public Bot API


class TelegramSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    telegram_bot_token: SecretStr
    # A local Bot API server (it also lifts the 20 MB download limit): e.g.
    # http://127.0.0.1:8081/bot and http://127.0.0.1:8081/file/bot
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_file_base_url: str = "https://api.telegram.org/file/bot"
    telegram_download_limit: int = Field(BOT_API_DOWNLOAD_LIMIT, gt=0)
    bot_webhook_url: str | None = None  # webhook mode when set together with the secret
    bot_webhook_secret: SecretStr | None = None
    bot_listen_host: str = "0.0.0.0"
    bot_listen_port: int = Field(8080, gt=0, lt=65536)
    bot_flood_scale: float = Field(1.0, gt=0, le=1.0)  # < 1 only for tests and benchmarks
    telegram_timeout_seconds: float = Field(10.0, gt=0)  # read/write timeout of Bot API calls
    # /metrics: with a token, for `Authorization: Bearer <token>` only; without, for loopback only.
    bot_metrics_token: SecretStr | None = None

    @model_validator(mode="after")
    def _webhook_pair(self) -> TelegramSettings:
        """Half a webhook set-up is a mistake to name, not a silent fall-back to polling."""
        if bool(self.bot_webhook_url) != bool(self.bot_webhook_secret):
            missing = "BOT_WEBHOOK_SECRET" if self.bot_webhook_url else "BOT_WEBHOOK_URL"
            raise ValueError(
                f"{missing} is not set (webhook mode needs BOT_WEBHOOK_URL and BOT_WEBHOOK_SECRET)"
            )
        return self

    @property
    def webhook(self) -> bool:
        return bool(self.bot_webhook_url and self.bot_webhook_secret)
