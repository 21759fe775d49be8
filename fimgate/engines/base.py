"""What every engine takes and gives: a FimJob in, text deltas and one Finished out.

An engine is split in two steps so the HTTP layer can still answer with a clean 4xx before
any byte of a stream is sent: ``encode`` (tokenize, check the context) then ``generate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

# Why a completion ended; the API adds "error" for an engine that failed mid-stream.
FinishReason = Literal["stop", "length", "model_length"]


def max_new_tokens(context_length: int, prompt_tokens: int, max_tokens: int | None) -> int:
    """Tokens a completion may have: what the request allows, within the context left after
    its prompt (vLLM's get_max_tokens). The one budget: admission reserves by it, generation
    stops by it."""
    room = max(0, context_length - prompt_tokens)
    return room if max_tokens is None else min(max_tokens, room)


@dataclass(frozen=True)
class Editor:
    """Who is typing: an API key on a model, and the client's own session id where its wire
    carries one (without it, a team that shares a key is one editor)."""

    key_id: str
    model: str
    session: str = ""


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
    # Whose prompt this is: what an engine remembers of prompts to serve the next one faster
    # stays with the same editor (engines/sessions.py). None: remember nothing.
    editor: Editor | None = None


@dataclass(frozen=True)
class EncodedPrompt:
    """A FIM prompt as the engine will run it: ``tokens`` is what usage reports, ``max_new``
    the completion's budget (``max_new_tokens`` of the prompt as run)."""

    tokens: int
    max_new: int
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

    def upstreams(self) -> list[dict[str, object]]:
        """Each upstream server's state, where the model runs on some (else none)."""
        ...

    async def aclose(self) -> None: ...
