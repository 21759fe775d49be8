"""OpenAI's legacy completions wire (``POST /v1/completions``) with ``suffix``: the openai SDK,
Tabby's ``openai/completion`` backend, Twinny, and Zed's ``open_ai_compatible_api`` edit
predictions (a prompt already laid out with FIM markers: wires/laid_out.py).

The same path is Tabby's own completion API: a body with ``segments`` is Tabby's
(wires/tabby.py), any other OpenAI's.

Fields OpenAI has that a FIM server cannot honour (``n`` > 1, ``best_of``, ``echo``,
``logprobs``, ``logit_bias``) are a 422 that says so, not ignored. Sampling defaults are the
server's, as on every wire (``max_tokens`` OpenAI's 16), so one job gives one completion
whichever wire it came on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fimgate.api.request_body import parse_body
from fimgate.api.streaming import SSE_DONE, sse_json
from fimgate.api.wires.base import (
    Asked,
    StreamOptions,
    Timing,
    Wire,
    only,
    seed_of,
    stops,
    usage_of,
    written,
)
from fimgate.api.wires.laid_out import read_laid_out
from fimgate.api.wires.tabby import TabbyRequest, is_tabby
from fimgate.engines.base import Editor, FimJob, Finished, TextDelta

# OpenAI's default for a request that sends no max_tokens.
DEFAULT_MAX_TOKENS = 16


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    route: ClassVar[str] = "completions"

    model: str = Field(min_length=1)
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: int | None = Field(default=DEFAULT_MAX_TOKENS, ge=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int | None = None
    best_of: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    echo: bool | None = None
    logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _servable(self) -> CompletionRequest:
        one = "a FIM server writes one completion per request"
        only(self.n, (1,), "n", one)
        only(self.best_of, (1,), "best_of", one)
        only(self.echo, (False,), "echo", "the prompt is not echoed back")
        only(self.logprobs, (0,), "logprobs", "log-probabilities are not returned")
        only(self.logit_bias or None, (), "logit_bias", "logit_bias is not supported")
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt: send one prompt (a string, or a list of one string)")
        return self

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def streams(self) -> bool:
        return bool(self.stream)

    def job(self, editor: Editor, default_temperature: float) -> FimJob:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        laid_out = read_laid_out(prompt, self.suffix or "")
        return FimJob(
            prefix=laid_out.prefix if laid_out else prompt,
            suffix=laid_out.suffix if laid_out else self.suffix or "",
            max_tokens=self.max_tokens,
            temperature=default_temperature if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=seed_of(self.seed),
            stop=stops(self.stop),
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            context=laid_out if laid_out and (laid_out.files or laid_out.path) else None,
            editor=editor,
        )

    def answer(
        self,
        request_id: str,
        model: str,
        deltas: Sequence[TextDelta],
        done: Finished,
        timing: Timing,
    ) -> dict[str, Any]:
        text = written(deltas)
        return {
            "id": request_id, "object": "text_completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": _finish(done)}],
            "usage": usage_of(done),
        }  # fmt: skip

    def chunks(self, request_id: str, model: str) -> CompletionChunks:
        usage = self.stream_options is not None and self.stream_options.include_usage
        return CompletionChunks(request_id, model, usage)


def _finish(done: Finished) -> Literal["stop", "length"]:
    return "stop" if done.finish_reason == "stop" else "length"


class CompletionChunks:
    """OpenAI's streamed completion: text chunks, the finish, the usage chunk (with
    ``stream_options.include_usage``), ``[DONE]``."""

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        self._head = {"id": request_id, "object": "text_completion", "created": int(time.time()),
                      "model": model}  # fmt: skip
        self._usage = include_usage

    def _event(self, body: dict[str, Any]) -> bytes:
        return sse_json({**self._head, **body})

    def _choice(self, text: str, finish: str | None) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return self._event({"choices": [choice]})

    def opening(self) -> bytes:
        return b""

    def text(self, delta: TextDelta) -> bytes:
        text = delta.text
        return self._choice(text, None)

    def finished(self, done: Finished, timing: Timing) -> bytes:
        end = self._choice("", _finish(done))
        usage = self._event({"choices": [], "usage": usage_of(done)})
        return end + (usage if self._usage else b"")

    def failed(self) -> bytes:
        # OpenAI's (and vLLM's) way to end a stream that failed after it started.
        error = {"message": "the model failed", "type": "engine_error", "code": 503}
        return sse_json({"error": error})

    def closing(self) -> bytes:
        return SSE_DONE


def parse(body: bytes) -> Asked:
    """Tabby's body (it has ``segments``), or OpenAI's."""
    if is_tabby(body):
        return parse_body(body, TabbyRequest)
    return parse_body(body, CompletionRequest)


WIRE = Wire(
    "completions", parse, route_of=lambda body: "tabby" if is_tabby(body) else "completions"
)
