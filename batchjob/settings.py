"""Service settings from the environment (and `.env`), validated at start."""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from batchjob.errors import ConfigError  # here too: where callers have looked for it


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHJOB_", env_file=".env", extra="ignore")

    base_url: str = "http://127.0.0.1:8800"
    bearer_token: SecretStr
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


def describe(e: ValidationError, prefix: str = "BATCHJOB_") -> str:
    """The first problem as one line, e.g. `BATCHJOB_BEARER_TOKEN is not set`. Never the value."""
    err = e.errors()[0]
    if not err["loc"]:  # a rule across settings: its message names them
        return str(err["msg"]).removeprefix("Value error, ")
    name = prefix + "_".join(str(p) for p in err["loc"]).upper()
    if err["type"] == "missing":
        return f"{name} is not set"
    return f"{name} is invalid: {err['msg']}"


def load_service_settings() -> ServiceSettings:
    try:
        return ServiceSettings()  # type: ignore[call-arg]
    except ValidationError as e:
        raise ConfigError(describe(e)) from None
