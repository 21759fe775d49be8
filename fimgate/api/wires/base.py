"""What a wire is: one client format, read into the one FIM job and written back.

A wire knows its client's format and nothing else (../DESIGN.md): ``parse`` reads a body
into a request of that format, which gives the engine's job and writes the answer, whole or
as stream chunks; ``error`` writes a refusal as that client parses one. The serving step
(api/serving.py) runs every wire the same way: a new editor is a new wire.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict
from starlette.responses import JSONResponse

from fimgate.api.errors import ApiError, error_response
from fimgate.engines.base import Editor, Finished, Job, TextDelta

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Timing:
    """How long a request took, for wires that report it (llama.cpp's timings, Ollama's
    durations): to its first token (None: none came), and in all."""

    first_token_s: float | None
    total_s: float

    @property
    def prompt_s(self) -> float:
        return self.total_s if self.first_token_s is None else self.first_token_s

    @property
    def predict_s(self) -> float:
        return self.total_s - self.prompt_s


class Stream(Protocol):
    """One streamed answer's pieces, as bytes on the wire (b"" where the format has none)."""

    def opening(self) -> bytes: ...

    def text(self, delta: TextDelta) -> bytes: ...

    def finished(self, done: Finished, timing: Timing) -> bytes: ...

    def failed(self) -> bytes:
        """The engine failed after the headers went out."""
        ...

    def closing(self) -> bytes:
        """After the request is settled (SSE's ``[DONE]``): a client that saw it has its
        ledger row."""
        ...


class Asked(Protocol):
    """A request as one wire reads it."""

    @property
    def model_name(self) -> str | None:
        """The model asked for; None: the server's first model (a wire with no model field)."""
        ...

    @property
    def streams(self) -> bool: ...

    @property
    def route(self) -> str:
        """What the ledger and the metrics call this kind of request."""
        ...

    def job(self, editor: Editor, default_temperature: float) -> Job: ...

    def answer(
        self,
        request_id: str,
        model: str,
        deltas: Sequence[TextDelta],
        done: Finished,
        timing: Timing,
    ) -> dict[str, Any]:
        """The whole answer, from what the engine wrote (``written`` gives its text)."""
        ...

    def chunks(self, request_id: str, model: str) -> Stream: ...


# A refusal as a wire's clients parse it, with the response's headers.
ErrorWriter = Callable[[ApiError, dict[str, str] | None], JSONResponse]


@dataclass(frozen=True)
class Wire:
    name: str
    parse: Callable[[bytes], Asked]
    media_type: str = SSE
    # Whether a model name its clients send is only a wish: one not served gets the first
    # model (llama.cpp's /infill ignores the name, and llama.vscode sends a cloud model's).
    any_model: bool = False
    # Mistral's and OpenAI's envelope by default.
    error: ErrorWriter = error_response
    # The route of a body this wire may refuse (a path two wires share): else its name.
    route_of: Callable[[bytes], str] | None = None


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``."""

    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


def only(value: object, allowed: tuple[object, ...], field: str, why: str) -> None:
    """A 422 (from a validator) for a field a FIM server cannot honour, unless left out or
    at a value that asks nothing of it."""
    if value is not None and value not in allowed:
        raise ValueError(f"{field}: {why}")


def usage_of(done: Finished) -> dict[str, int]:
    """OpenAI's and Mistral's ``usage``."""
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}  # fmt: skip


def written(deltas: Sequence[TextDelta]) -> str:
    return "".join(delta.text for delta in deltas)


def stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def seed_of(seed: int | None) -> int | None:
    """llama.cpp seeds are 32-bit and 0xFFFFFFFF means "random": larger seeds are folded,
    and a negative one (Ollama's and llama.cpp's "random") is no seed."""
    return None if seed is None or seed < 0 else seed % 0xFFFFFFFF
