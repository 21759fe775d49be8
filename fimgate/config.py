"""Settings: env variables ``FIMGATE_*``, overridden by command-line flags; checked at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fimgate.modelpack import DEFAULT_MODEL

# Names that clients configured for the hosted service send; they resolve to our default model
# so a Continue or SDK config written for Codestral works unchanged.
CODESTRAL_ALIASES = ("codestral-latest", "codestral-2501", "codestral-2405")


class Settings(BaseSettings):
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
    # FIM template family; None detects it from the model's vocabulary.
    fim_template: str | None = None
    # Context per sequence. Prompt + completion must fit; 8k covers editor prompts while the
    # KV cache stays small (about 230 MB for the 1.5B model).
    n_ctx: int = Field(default=8192, ge=256)
    # Parallel sequences (llama.cpp slots) sharing one unified KV cache: continuous batching.
    n_parallel: int = Field(default=4, ge=1, le=64)
    threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    # Prompt tokens per decode step. Smaller batches mean more points where a cancelled
    # request can stop during prompt processing (editors cancel constantly).
    n_batch: int = Field(default=256, ge=32)
    # Prompt budget in tokens (0: none). The prefix keeps its end, the suffix its start. Every
    # keystroke recomputes the whole suffix (its KV depends on the prefix before it), so the
    # suffix cap is what a keystroke costs; see bench/RESULTS.md for how it was chosen.
    max_prefix_tokens: int = Field(default=1472, ge=0)
    max_suffix_tokens: int = Field(default=64, ge=0)
    # A deployment's time bound: stop generating once this long has passed since the first
    # token and a line is complete (llama.cpp's t_max_predict_ms); 0: none. Off by default:
    # a wall-clock rule makes the completion depend on how busy the machine is, and a cut
    # completion reports finish_reason "length".
    max_predict_ms: int = Field(default=0, ge=0)
    # Host RAM for the KV of prompts that left their slot: switching back to a file restores
    # it instead of recomputing (llama.cpp's --cache-ram).
    cache_ram_mib: int = Field(default=1024, ge=0)
    # Put back the lines an editor's window dropped from the top since its last prompt, so the
    # prompt keeps the start the cache holds (engines/window_recall.py); needs a prefix cap.
    window_recall: bool = True
    # End a completion where the middle ends: at a code fence or chat marker written out, or
    # where the suffix's next line is typed again (engines/middle_end.py).
    middle_end_stops: bool = True
    # The text typed lately goes at the middle's start, so a keystroke does not read the
    # suffix again (engines/typed_middle.py).
    typed_middle: bool = True
    # Other files an editor writes into the prompt in one of Continue's formats are laid out
    # in the model's own repository format (engines/editor_context.py), within this many
    # tokens; a prompt in none of the formats is not touched.
    editor_context: bool = True
    max_context_tokens: int = Field(default=2048, ge=0)
    # A greedy request that types along an earlier suggestion of the same key gets its rest at
    # once, and generation goes on from its end (engines/suggestions.py).
    suggestions: bool = True
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

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'fimgate.db'}"

    @property
    def first_key_file(self) -> Path:
        return self.bootstrap_key_file or self.data_dir / "first-api-key"

    @field_validator("models", "regions", "allowed_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        # FIMGATE_REGIONS=eu,us reads naturally.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
