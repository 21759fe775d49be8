"""Settings: env variables ``FIMGATE_*``, overridden by command-line flags; checked at start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fimgate.engines.settings import EngineSettings
from fimgate.modelpack import DEFAULT_MODEL

# Names that clients configured for the hosted service send; they resolve to our default model
# so a Continue or SDK config written for Codestral works unchanged.
CODESTRAL_ALIASES = ("codestral-latest", "codestral-2501", "codestral-2405")


class Settings(BaseSettings, EngineSettings):
    """Everything ``serve`` reads; the engine's own settings come from ``EngineSettings``."""

    model_config = SettingsConfigDict(env_prefix="FIMGATE_", extra="forbid")

    data_dir: Path = Field(default_factory=lambda: platformdirs.user_data_path("fimgate"))
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # Packaged model names or GGUF paths; the first is the default the aliases point to.
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_MODEL], min_length=1
    )
    # Regions accepted in /mistral/{region}/v1/...; any other is a 404.
    regions: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["eu"], min_length=1)
    # Upstream servers to answer from instead of the embedded model (engines/upstreams.py):
    # URLs for the first model name, or a backends file for several models.
    upstreams: Annotated[list[str], NoDecode] = Field(default_factory=list)
    backends_file: Path | None = None
    # Greedy by default: the best completions for editors, and repeatable.
    default_temperature: float = Field(default=0.0, ge=0.0, le=1.5)

    # -- the gateway ------------------------------------------------------------------------
    # Workspaces, keys, limits and usage: SQLite in data_dir unless a URL is given
    # (postgresql://user@host/db for several replicas).
    database_url: str | None = None
    # Rate limits in-process unless a Redis URL is given (shared by every replica).
    redis_url: str | None = None
    # The hosted service's limits, per workspace and model; `fimgate limits set` overrides.
    default_rpm: int = Field(default=500, ge=1)
    default_tpm: int = Field(default=60_000, ge=1)
    # Completion tokens reserved at admission (or max_tokens, if smaller). Continue sends
    # max_tokens 4096 on every keystroke; reserving that would allow ~14 requests a minute.
    # The reservation is settled to the real count when the request ends.
    reserve_output_tokens: int = Field(default=64, ge=0)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    # Browser origins allowed to call the API (they get CORS); any other Origin is a 403.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Where `serve` writes the first API key when the database has none.
    bootstrap_key_file: Path | None = None

    # -- operations -------------------------------------------------------------------------
    # /metrics wants this as a Bearer token; unset, it answers this machine (loopback) only.
    metrics_token: str | None = Field(default=None, repr=False)
    # Log lines as text, or one JSON object a line (for log shippers).
    log_format: Literal["text", "json"] = "text"
    # On SIGTERM: refuse new requests (503), let those in flight finish for up to this long.
    drain_seconds: float = Field(default=30.0, ge=0)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'fimgate.db'}"

    @property
    def first_key_file(self) -> Path:
        return self.bootstrap_key_file or self.data_dir / "first-api-key"

    @field_validator("models", "regions", "allowed_origins", "upstreams", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        # FIMGATE_REGIONS=eu,us reads naturally.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
