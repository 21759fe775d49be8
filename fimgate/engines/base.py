"""What every engine takes and gives: a FimJob in, text deltas and one Finished out.

An engine is split in two steps so the HTTP layer can still answer with a clean 4xx before
any byte of a stream is sent: ``encode`` (tokenize, check the context) then ``generate``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from fimgate.engines.editor_context import EditorContext

# Why a completion ended ("tool_calls": a chat answer that calls tools); the API adds "error"
# for an engine that failed mid-stream.
FinishReason = Literal["stop", "length", "model_length", "tool_calls"]
MemoryScope = Literal["off", "key", "workspace"]


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
    # What the gateway remembers of the files it showed (engines/context_memory.py), and who
    # else's it reads: off, key (its key's own), workspace (its workspace's keys', shared).
    workspace: int = 0
    memory: MemoryScope = "key"


@dataclass(frozen=True)
class FimJob:
    """One completion to write, whatever wire asked for it. ``max_tokens`` 0 asks for none:
    the prompt is read into the cache only (llama.vscode's warm-ups)."""

    prefix: str
    suffix: str
    max_tokens: int | None  # None: until the model stops or the context is full
    min_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off (the Mistral and OpenAI APIs have none)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # llama.cpp's n_indent: the completion ends before a later line indented less than this.
    n_indent: int = 0
    # The client's own time bound on writing (llama.cpp's t_max_predict_ms; 0: none).
    max_predict_ms: int = 0
    # Other files and the current path, where the wire carries them apart from the prefix
    # (/infill's input_extra, Tabby's segments); None: read out of the prompt, if there.
    context: EditorContext | None = None
    # Whose prompt this is: what an engine remembers of prompts to serve the next one faster
    # stays with the same editor (engines/sessions.py). None: remember nothing.
    editor: Editor | None = None


@dataclass(frozen=True)
class ChatJob:
    """A chat answer to write: OpenAI's chat request as the engine takes it (``messages``,
    and ``tools``, ``tool_choice``, ``response_format`` where asked), its sampling apart."""

    messages: tuple[dict[str, Any], ...]
    max_tokens: int | None
    temperature: float
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # tools, tool_choice, response_format
    editor: Editor | None = None


Job = FimJob | ChatJob


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
    # A chat answer's other delta fields (tool_calls, reasoning_content), in OpenAI's shape.
    fields: dict[str, Any] | None = None


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


EngineEvent = TextDelta | Finished


class EngineError(RuntimeError):
    """The engine failed for a reason that is not the client's."""


class GenerationLost(EngineError):
    """A generation that had started was lost on the engine's side (an upstream that failed
    or went silent after its first token): the request is sound, and one whose client has
    seen nothing yet may be run again (it goes to another upstream)."""


class EngineRefused(EngineError):
    """The engine refused the request itself (a tool schema its template cannot take, a
    response format it cannot follow): the client's to fix, a 400."""


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
    """A model for FIM jobs, and chat jobs where it can chat. ``generate`` stops as soon as
    its iterator is closed."""

    context_length: int

    async def encode(self, job: Job) -> EncodedPrompt: ...

    def generate(self, prompt: EncodedPrompt, job: Job) -> AsyncIterator[EngineEvent]: ...

    def stats(self) -> dict[str, int]: ...

    def upstreams(self) -> list[dict[str, object]]:
        """Each upstream server's state, where the model runs on some (else none)."""
        ...

    async def aclose(self) -> None: ...
