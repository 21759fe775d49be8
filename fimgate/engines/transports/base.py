"""What a transport offers and takes: token ids and sampling in, chunks of text out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


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


@dataclass(frozen=True)
class Sampling:
    """One generation call, in llama.cpp's terms."""

    n_predict: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False
    grammar: str = ""
    max_predict_ms: int = 0
    # Who is typing where (API key and file): requests with the same affinity go where their
    # prompt is cached while that upstream is healthy and not overloaded.
    affinity: str = ""


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

    def run(self, ids: list[int], sampling: Sampling) -> AsyncIterator[Chunk]: ...

    def stats(self) -> dict[str, int]: ...

    async def aclose(self) -> None: ...
