"""What a transport offers and takes: token ids and sampling in, chunks of text out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from fimgate.engines.base import EngineError
from fimgate.engines.sessions import Turn


@dataclass(frozen=True)
class Capabilities:
    """What a transport can do. Every transport here takes prompts as token ids and has a
    tokenizer that reads user text as text (llama.cpp's ``/tokenize``); a text-only upstream
    (Mistral's API) would have neither, and is not built (it cannot be reached from here)."""

    # Grammar-constrained sampling (GBNF): needed to take typed tokens back and have the
    # model write them again (typed_middle.py); without it the prompt keeps them as typed.
    grammar: bool
    # Progress while a prompt is read, so a long read can step out for a keystroke.
    progress: bool = False
    # A time bound on generation (llama.cpp's t_max_predict_ms).
    time_bound: bool = True


@dataclass(frozen=True)
class Sampling:
    """One generation call, in llama.cpp's terms."""

    n_predict: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False
    grammar: str = ""
    max_predict_ms: int = 0

    def check(self, capabilities: Capabilities) -> None:
        """Refuse what a transport cannot honour, rather than drop it unsaid."""
        if self.grammar and not capabilities.grammar:
            raise EngineError("this engine takes no grammar")
        if self.max_predict_ms and not capabilities.time_bound:
            raise EngineError("this engine takes no time bound (FIMGATE_MAX_PREDICT_MS)")


@dataclass(frozen=True)
class Route:
    """Where a generation should run, beside what it samples: requests with the same
    ``affinity`` (an editor and its file) go where their prompt is cached; ``turn`` is held
    while the engine works on it and let go when that work has ended (engines/sessions.py)."""

    affinity: str = ""
    turn: Turn = field(default_factory=Turn)


@dataclass(frozen=True)
class Chunk:
    text: str
    predicted: int  # tokens generated so far in this call
    finish_reason: str | None  # "stop" (end of generation or stop word) or "length"


class Transport(Protocol):
    """Token ids in, text out. ``run`` stops as soon as its iterator is closed. The tokenizer
    reads user text as text: markers written in it never become special tokens."""

    capabilities: Capabilities
    context_length: int

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]: ...

    def special_token(self, marker: str) -> int | None: ...

    def bos_token(self) -> str | None: ...

    def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]: ...

    def chat(self, body: dict[str, Any], route: Route) -> AsyncIterator[dict[str, Any]]:
        """A chat answer (OpenAI's streamed chunks) for OpenAI's chat request ``body``."""
        ...

    def stats(self) -> dict[str, int]: ...

    def upstreams(self) -> list[dict[str, object]]: ...

    async def aclose(self) -> None: ...
