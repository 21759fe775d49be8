"""Every setting, declared once: one tree of four sections (server, gateway, store, engine).

Each setting is read from its environment variable ``FIMGATE_<NAME>`` (the names are flat,
unique across sections), then from a command-line flag where the command has one
(``cli_settings.py`` makes the flags from this tree, their help showing the default used
here). ``fimgate serve`` reads the whole tree, ``fimgate engine-server`` the parts it needs,
and docs/operations.md's table is this tree (``markdown_table``, checked by a test).

This module imports nothing of fimgate's but the packaged model's name: every layer may read
its section from here, and none reaches up for it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fimgate.modelpack import DEFAULT_MODEL

ENV_PREFIX = "FIMGATE_"
# A list setting is written comma-separated in its variable (FIMGATE_REGIONS=eu,us).
CommaList = Annotated[list[str], NoDecode]


def setting(
    default: Any = ..., *, help: str, flag: str | None = "", shown: str = "", **kwargs: Any
) -> Any:
    """A field with its help text. ``flag``: its command-line flag ("" for ``--name``; None
    for none: a secret is never a flag, since the process list shows flags to everyone).
    ``shown``: the default in words, where it is the machine's (all cores, a home folder)."""
    extra = {"flag": flag, "shown": shown}
    return Field(default, description=help, json_schema_extra=extra, **kwargs)


class _Section(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _split_commas(cls, value: object, info: Any) -> object:
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, str) and annotation == list[str]:
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class ServerSettings(_Section):
    """The HTTP server and what it answers."""

    host: str = setting("127.0.0.1", help="Interface to listen on.")
    port: int = setting(8000, ge=0, le=65535, help="Port to listen on.")
    regions: CommaList = setting(
        ["eu"], flag="--region", min_length=1,
        help="Regions accepted in /mistral/{region}/v1/...; any other is a 404 (repeatable).",
    )  # fmt: skip
    allowed_origins: CommaList = setting(
        [], flag="--allowed-origin",
        help="Browser origins allowed to call the API, with CORS (repeatable); any other "
        "Origin is a 403.",
    )  # fmt: skip
    max_body_bytes: int = setting(1 << 20, ge=1024, help="Largest request body; more is a 413.")
    header_read_s: float = setting(
        10.0, gt=0, help="A connection waiting for a request's headers (new, or kept alive "
        "after an answer) must get them whole within this many seconds; else a 408 and the "
        "connection closed.",
    )  # fmt: skip
    body_read_s: float = setting(
        10.0, gt=0, help="A request's body must arrive whole within this many seconds of the "
        "route starting to read it; else a 408 and the connection closed.",
    )  # fmt: skip
    default_temperature: float = setting(
        0.0, ge=0.0, le=1.5,
        help="Temperature of a request that sends none (greedy: the best completions for "
        "editors, and repeatable).",
    )  # fmt: skip
    metrics_token: str | None = setting(
        None, flag=None, repr=False, shown="none: this machine (loopback) only",
        help="/metrics wants 'Authorization: Bearer <token>'.",
    )  # fmt: skip
    log_format: Literal["text", "json"] = setting(
        "text", help="Log lines as text, or one JSON object a line (for log shippers)."
    )
    drain_seconds: float = setting(
        30.0, ge=0, help="On SIGTERM: new requests get a 503 while those in flight finish, "
        "for up to this long.",
    )  # fmt: skip


class GatewaySettings(_Section):
    """Keys, rate limits and usage."""

    default_rpm: int = setting(
        500, ge=1, help="Requests per minute per workspace and model (the hosted service's); "
        "`fimgate limits set` overrides.",
    )  # fmt: skip
    default_tpm: int = setting(
        60_000, ge=1, help="Tokens (prompt + completion) per minute per workspace and model; "
        "`fimgate limits set` overrides.",
    )  # fmt: skip
    reserve_output_tokens: int = setting(
        64, ge=0,
        help="Completion tokens reserved at admission (or max_tokens, if smaller), settled to "
        "the real count at the end. Continue sends max_tokens 4096 on every keystroke: "
        "reserving that would allow ~14 requests a minute.",
    )  # fmt: skip
    bootstrap_key_file: Path | None = setting(
        None, help="Where `serve` writes the first API key when the database has none.",
        shown="DATA_DIR/first-api-key",
    )  # fmt: skip


class StoreSettings(_Section):
    """Where state lives."""

    data_dir: Path = setting(
        default_factory=lambda: platformdirs.user_data_path("fimgate"),
        help="State folder: the SQLite database, the first key, assembled models.",
        shown="~/.local/share/fimgate",
    )
    database_url: str | None = setting(
        None, help="Workspaces, keys, limits and usage (postgresql://user@host/db for "
        "several replicas).", shown="SQLite at DATA_DIR/fimgate.db",
    )  # fmt: skip
    redis_url: str | None = setting(
        None, help="Share rate limits between replicas through Redis.", shown="in-process"
    )
    store_read_s: float = setting(
        5.0, gt=0, help="A key check or limits lookup in the database must answer within this "
        "many seconds; else the request gets a 503 with Retry-After (a frozen database).",
    )  # fmt: skip
    ledger_write_s: float = setting(
        5.0, gt=0, help="A request's usage row must be written within this many seconds; else "
        "its answer is withheld (503 usage_not_recorded), and a row that commits later is "
        "amended to say so.",
    )  # fmt: skip
    redis_timeout_s: float = setting(
        5.0, gt=0, help="Each call to Redis (connect, admit, settle) must answer within this "
        "many seconds; else the request gets a 503 with Retry-After.",
    )  # fmt: skip

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'fimgate.db'}"


class EngineSettings(_Section):
    """What answers, and how: the model in-process or upstream servers, the prompt, the
    completion."""

    # -- which models, and where they run ---------------------------------------------------
    models: CommaList = setting(
        [DEFAULT_MODEL], flag="--model", min_length=1,
        help="Packaged model names or GGUF paths (repeatable); the first is the default that "
        "Codestral's names point to.",
    )  # fmt: skip
    upstreams: CommaList = setting(
        [], flag="--upstream", shown="none: the model runs in-process",
        help="Servers to answer from instead of the embedded model, for the first model name "
        "(repeatable): http://HOST:PORT is a llama.cpp server, openai+http://... an "
        "OpenAI-compatible one (docs/deploy.md).",
    )  # fmt: skip
    backends_file: Path | None = setting(
        None, help="Upstreams per served model, with weights and draining (TOML; "
        "docs/deploy/backends.toml).",
    )  # fmt: skip
    routing: Literal["affinity", "round-robin"] = setting(
        "affinity", help="affinity: one editor and file stay on one upstream, where its prompt "
        "is cached, while it is healthy and not overloaded; round-robin: the least busy.",
    )  # fmt: skip
    upstream_health_interval_s: float = setting(
        2.0, gt=0, help="How often each upstream's /health is asked."
    )
    upstream_health_timeout_s: float = setting(
        5.0, gt=0, help="How long an upstream's /health has to answer 200 before it is ejected "
        "(it comes back when it answers again).",
    )  # fmt: skip
    upstream_stall_s: float = setting(
        30.0, gt=0, help="After its first token, the longest an upstream may send nothing (a "
        "frozen server: one the health check ejected gets 2 s); past it the upstream is ejected "
        "and the generation lost: a stream ends with an error, a whole answer is run again on "
        "another upstream.",
    )  # fmt: skip

    # -- how the in-process llama.cpp runs (an upstream server has its own) -----------------
    n_ctx: int = setting(
        8192, ge=256, help="Context per sequence: prompt + completion must fit (8k covers "
        "editor prompts; the 1.5B's KV cache is then ~230 MB).",
    )  # fmt: skip
    n_parallel: int = setting(
        4, ge=1, le=64, flag="--parallel",
        help="Sequences decoded together (llama.cpp slots sharing one KV cache).",
    )  # fmt: skip
    threads: int = setting(
        default_factory=lambda: os.cpu_count() or 1, ge=1, help="CPU threads.", shown="all cores"
    )
    n_batch: int = setting(
        256, ge=32, help="Prompt tokens per decode step: smaller batches mean more points where "
        "a cancelled request can stop while its prompt is read.",
    )  # fmt: skip
    cache_ram_mib: int = setting(
        1024, ge=0, help="Host RAM for the KV of prompts that left their slot: switching back "
        "to a file restores it instead of reading it again.",
    )  # fmt: skip

    # -- building the prompt (engines/prompt_builder.py) -----------------------------------
    fim_template: str | None = setting(
        None, help="FIM template family.", shown="detected from the model's vocabulary"
    )
    max_prefix_tokens: int = setting(
        1472, ge=0, help="The prefix keeps its last this many tokens, cut in 256-token blocks "
        "so the cache survives typing (0: no cap).",
    )  # fmt: skip
    max_suffix_tokens: int = setting(
        64, ge=0, help="The suffix keeps its first this many tokens: what a keystroke costs "
        "(docs/engine.md#serving-editors; 0: no cap).",
    )  # fmt: skip
    window_recall: bool = setting(
        True, help="Put back the lines an editor's window dropped from the top, so the prompt "
        "keeps the start the cache holds (needs a prefix cap).",
    )  # fmt: skip
    typed_middle: bool = setting(
        True, help="Put the text typed lately at the middle's start, so a keystroke does not "
        "read the suffix again.",
    )  # fmt: skip
    editor_context: bool = setting(
        True, help="Other files' snippets in one of Continue's prompt formats are laid out in "
        "the model's own repository format.",
    )  # fmt: skip
    max_context_tokens: int = setting(
        2048, ge=0, help="Those snippets keep at most this many tokens (the least recent are "
        "dropped first).",
    )  # fmt: skip
    editor_memory: bool = setting(
        True, help="Remember (in memory only, per key, for minutes) the windows and files each "
        "editor sends, and give a prompt that carries no other files the chunks of other files "
        "most related to it (docs/engine.md#editor-memory; a workspace can turn it off).",
    )  # fmt: skip
    memory_tokens: int = setting(
        768, ge=0, help="The chunks a prompt gets from editor memory keep at most this many "
        "tokens (the least related are left out).",
    )  # fmt: skip
    memory_layout: Literal["chunks", "files"] = setting(
        "files", help="How memory's chunks are laid out: files, a remembered file's chunks "
        "together under one file separator; chunks, each under one of its own (measured in "
        "eval/RESULTS.md, \"Memory's chunks laid out as files\").",
    )  # fmt: skip
    memory_beside_client_files: bool = setting(
        False, help="Give editor memory's chunks to a prompt whose client sent other files "
        "too (Continue's snippets, input_extra, Tabby's segments), before them; by default "
        "such a prompt gets the client's files alone.",
    )  # fmt: skip

    # -- shaping the completion (engines/shaping.py) ---------------------------------------
    max_predict_ms: int = setting(
        0, ge=0, help="A deployment's time bound: stop generating this long after the first "
        "token, once a line is complete (finish_reason length); 0: none, since a wall-clock "
        "rule makes a completion depend on how busy the machine is.",
    )  # fmt: skip
    middle_end_stops: bool = setting(
        True, help="End a completion at a code fence or chat marker written out, or where it "
        "types the suffix's next line again (as a line, or joined onto its first).",
    )  # fmt: skip
    suggestions: bool = setting(
        True, help="A greedy request that types along an earlier suggestion of the same editor "
        "gets its rest at once, and generation goes on from its end.",
    )  # fmt: skip

    # -- chat (engines/chat.py) -------------------------------------------------------------
    chat_slots: int = setting(
        1, ge=0, help="Chats a model answers at once (more wait their turn), so the other "
        "slots stay free for autocomplete, whose keystrokes come first; 0: no chat.",
    )  # fmt: skip

    # -- `fimgate engine-server` ------------------------------------------------------------
    engine_host: str = setting("127.0.0.1", flag="--host", help="engine-server: interface.")
    engine_port: int = setting(8080, ge=0, le=65535, flag="--port", help="engine-server: port.")
    engine_api_key_env: str | None = setting(
        None, flag="--api-key-env",
        help="engine-server: the name of an environment variable holding the key its clients "
        "must send.",
    )  # fmt: skip


class Settings(BaseModel):
    """The whole tree. ``Settings()`` reads the environment; ``Settings.load`` adds flags."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @classmethod
    def load(cls, **given: Any) -> Settings:
        """The environment, overridden by ``given`` (settings by name, any section)."""
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for name, value in given.items():
            parts[section_of(name)][name] = value
        return cls(**{name: SECTIONS[name](**values) for name, values in parts.items()})

    @property
    def first_key_file(self) -> Path:
        return self.gateway.bootstrap_key_file or self.store.data_dir / "first-api-key"


SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "gateway": GatewaySettings,
    "store": StoreSettings,
    "engine": EngineSettings,
}


def fields() -> dict[str, FieldInfo]:
    """Every setting by name, section by section."""
    return {n: f for section in SECTIONS.values() for n, f in section.model_fields.items()}


def section_of(name: str) -> str:
    for section, model in SECTIONS.items():
        if name in model.model_fields:
            return section
    raise KeyError(f"no setting {name!r}")


def _extra(info: FieldInfo, key: str) -> Any:
    return (info.json_schema_extra or {}).get(key, "")  # type: ignore[union-attr]


def flag_of(name: str, info: FieldInfo) -> str | None:
    """The setting's flag as click declares it (``--x/--no-x`` for a switch), or None."""
    flag = _extra(info, "flag")
    if flag is None:
        return None
    flag = str(flag or "--" + name.replace("_", "-"))
    return f"{flag}/--no-{flag[2:]}" if info.annotation is bool else flag


def default_text(info: FieldInfo) -> str:
    """The default the code uses, as a person would write it."""
    if shown := _extra(info, "shown"):
        return str(shown)
    value = info.get_default(call_default_factory=True)
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def markdown_table() -> str:
    """docs/operations.md's settings table (tests/test_settings.py keeps the two equal)."""
    rows = ["| variable | flag | default | what |", "| --- | --- | --- | --- |"]
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            flag = flag_of(name, info)
            rows.append(
                f"| `{ENV_PREFIX}{name.upper()}` | {f'`{flag}`' if flag else ''} "
                f"| `{default_text(info)}` | {section}: {info.description} |"
            )
    return "\n".join(rows) + "\n"
