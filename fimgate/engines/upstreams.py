"""Which upstream servers answer for which served model: ``--upstream URL`` (repeatable) for
the simple case, a backends file (TOML) for several models, weights and draining::

    [[model]]
    name = "qwen2.5-coder-1.5b"          # what clients ask for
    aliases = ["codestral-latest"]       # default: Codestral's names, for the first model
    [[model.upstream]]
    url = "http://gpu1:8080"             # a llama.cpp server
    weight = 2
    [[model.upstream]]
    url = "http://gpu2:8000"
    kind = "openai"                      # vLLM, SGLang: /v1/completions with token ids
    tokenizer_url = "http://gpu1:8080"   # a llama.cpp /tokenize of the same model
    drain = true                         # no new requests; those in flight finish

Edits to weights and ``drain`` take effect at the next health check, without a restart: to
take an upstream out of service, set ``drain = true``, wait until ``/health`` shows it with
nothing in flight, then stop it. An ``--upstream`` URL written ``openai+http://...`` is an
OpenAI-compatible server. Upstream API keys come from the environment variable named by
``api_key_env``.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fimgate.engines.base import EngineError
from fimgate.engines.router import Router, Upstream, UpstreamTransport
from fimgate.settings import EngineSettings

log = logging.getLogger("fimgate.router")


class UpstreamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    kind: Literal["llamacpp", "openai"] = "llamacpp"
    weight: float = Field(default=1.0, gt=0)
    drain: bool = False
    api_key_env: str | None = None
    tokenizer_url: str | None = None
    model: str | None = None  # the name the OpenAI-compatible server knows it by

    @classmethod
    def from_url(cls, url: str) -> UpstreamSpec:
        if url.startswith("openai+"):
            return cls(url=url.removeprefix("openai+"), kind="openai")
        return cls(url=url)


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    aliases: list[str] | None = None
    upstream: list[UpstreamSpec] = Field(min_length=1)


class BackendsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: list[ModelSpec] = Field(min_length=1)


def read_backends(path: Path) -> list[ModelSpec]:
    try:
        return BackendsFile.model_validate(tomllib.loads(path.read_text())).model
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise EngineError(f"backends file {path}: {exc}") from exc


def upstream(spec: UpstreamSpec) -> Upstream:
    """One upstream as the router keeps it; it is reached when the router starts."""
    from fimgate.engines.transports.llamacpp_server import LlamaCppServer
    from fimgate.engines.transports.openai_compat import OpenAICompatible

    key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    kind = OpenAICompatible if spec.kind == "openai" else LlamaCppServer

    def opener() -> UpstreamTransport:
        if kind is OpenAICompatible:
            return OpenAICompatible(spec.url, key, spec.model, spec.tokenizer_url)
        return LlamaCppServer(spec.url, key)

    return Upstream(
        spec.url.rstrip("/"), opener, kind.capabilities, weight=spec.weight, draining=spec.drain
    )


def router_for(
    specs: list[UpstreamSpec], settings: EngineSettings, name: str = "", path: Path | None = None
) -> Router:
    """The router over ``specs``; with the backends file ``path`` it was read from, edits to
    the weights and ``drain`` of model ``name`` take effect at the next health check."""
    return Router(
        [upstream(spec) for spec in specs],
        interval=settings.upstream_health_interval_s,
        timeout=settings.upstream_health_timeout_s,
        stall=settings.upstream_stall_s,
        policy=settings.routing,
        refresh=_watch_file(path, name) if path else None,
    )


def _watch_file(path: Path, name: str) -> Callable[[], dict[str, tuple[float, bool]]]:
    """Each upstream's (weight, drain) for model ``name``, re-read when the file changes.
    A file that no longer reads keeps what was last read (and says so in the log)."""
    seen: list[object] = [None, {}]

    def refresh() -> dict[str, tuple[float, bool]]:
        try:
            stamp = path.stat().st_mtime_ns
            if stamp != seen[0]:
                seen[0] = stamp
                model = next(m for m in read_backends(path) if m.name == name)
                seen[1] = {u.url.rstrip("/"): (u.weight, u.drain) for u in model.upstream}
        except (OSError, EngineError, StopIteration) as exc:
            log.warning("backends file %s not applied: %r", path, exc)
        return seen[1]  # type: ignore[return-value]

    return refresh
