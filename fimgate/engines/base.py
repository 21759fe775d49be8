"""What every engine takes and gives: a FimJob in, text deltas and one Finished out.

An engine is split in two steps so the HTTP layer can still answer with a clean 4xx before
any byte of a stream is sent: ``encode`` (tokenize, check the context) then ``generate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "model_length"]


@dataclass(frozen=True)
class FimJob:
    prefix: str
    suffix: str
    max_tokens: int | None  # None: until the model stops or the context is full
    min_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # Whose prompt this is (the API key's id): what an engine remembers of prompts to serve
    # the next one faster stays with the same editor, never crosses to another key.
    editor: str = ""


@dataclass(frozen=True)
class EncodedPrompt:
    """A FIM prompt as the engine will run it; ``tokens`` is what usage reports."""

    tokens: int
    payload: object = field(repr=False)  # engine-specific (token ids for llama.cpp)


@dataclass(frozen=True)
class TextDelta:
    text: str
    tokens: int  # completion tokens generated so far (what a cancelled request is charged)


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


EngineEvent = TextDelta | Finished


class EngineError(RuntimeError):
    """The engine failed for a reason that is not the client's."""


class PromptTooLong(ValueError):
    """The prompt alone does not fit in the model's context."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"the prompt and suffix are {prompt_tokens} tokens, but the model's context "
            f"holds {context_length} (including at least one generated token); "
            f"send less context"
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


class Engine(Protocol):
    """A FIM-capable model. ``generate`` stops as soon as its iterator is closed."""

    context_length: int

    async def encode(self, job: FimJob) -> EncodedPrompt: ...

    def generate(self, prompt: EncodedPrompt, job: FimJob) -> AsyncIterator[EngineEvent]: ...

    def stats(self) -> dict[str, int]: ...

    def upstreams(self) -> list[dict[str, object]]: ...

    async def aclose(self) -> None: ...
