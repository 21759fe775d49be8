"""Chat, for Continue's chat and edit roles and every OpenAI or Mistral chat client:
``POST /v1/chat/completions`` (OpenAI's), ``/openai/{region}/v1/chat/completions`` (the
hosted gateway's layout for OpenAI clients) and ``/mistral/{region}/v1/chat/completions``
(Mistral's: ``random_seed``, ``safe_prompt``, usage in the last chunk).

The messages, ``tools``, ``tool_choice`` and ``response_format`` go to the engine, which has
the model's own chat template (llama.cpp's chat handler, or an upstream's); what a FIM
server cannot do (``n`` > 1, log-probabilities, images) is a 422 that says so. The answer
streams as each vendor streams it: OpenAI's usage chunk only when
``stream_options.include_usage`` asks, Mistral's usage in the last chunk; ``[DONE]`` last.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fimgate.api.request_body import parse_body
from fimgate.api.streaming import SSE_DONE, sse_json
from fimgate.api.wires.base import (
    StreamOptions,
    Timing,
    Wire,
    only,
    seed_of,
    stops,
    usage_of,
    written,
)
from fimgate.api.wires.tools import (
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    engine_fields,
    merged_fields,
)
from fimgate.engines.base import ChatJob, Editor, Finished, TextDelta

# Mistral's documented guardrail prompt, put first when a request asks for ``safe_prompt``.
SAFE_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. "
    "Avoid harmful, unethical, prejudiced, or negative content. Ensure replies promote "
    "fairness and positivity."
)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    # Mistral: the answer goes on from this assistant message. Engines differ on it (llama.cpp
    # goes on from any last assistant message, vLLM starts a new turn): refused, not guessed.
    prefix: Literal[False] = False

    def for_engine(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        # OpenAI's "developer" is the system prompt to every template that predates it.
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                                   "content": content or ""}  # fmt: skip
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump(exclude_none=True) for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mistral: ClassVar[bool] = False  # which vendor's stream this path's clients read

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    random_seed: int | None = Field(default=None, ge=0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    safe_prompt: bool = False
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # Accepted, and nothing to do here: who asks, a cache hint, a predicted output (a
    # speed-up hint for long edits: the answer is the same without it), Mistral's mode.
    user: str | None = None
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prediction: dict[str, Any] | None = None
    prompt_mode: None = None

    @model_validator(mode="after")
    def _servable(self) -> ChatRequest:
        only(self.n, (1,), "n", "one answer per request here")
        only(self.logprobs, (False,), "logprobs", "log-probabilities are not returned")
        only(self.top_logprobs, (0,), "top_logprobs", "log-probabilities are not returned")
        if None not in (self.max_tokens, self.max_completion_tokens) and (
            self.max_tokens != self.max_completion_tokens
        ):
            raise ValueError("max_tokens and max_completion_tokens differ; send one of them")
        return self

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def streams(self) -> bool:
        return bool(self.stream)

    @property
    def route(self) -> str:
        return "chat"

    def _messages(self) -> list[dict[str, Any]]:
        messages = [m.for_engine() for m in self.messages]
        if self.safe_prompt:  # first in the system prompt (templates take one, first)
            if messages[0]["role"] == "system":
                messages[0]["content"] = f"{SAFE_PROMPT}\n{messages[0]['content']}"
            else:
                messages.insert(0, {"role": "system", "content": SAFE_PROMPT})
        return messages

    def job(self, editor: Editor, default_temperature: float) -> ChatJob:
        seed = self.random_seed if self.random_seed is not None else self.seed
        return ChatJob(
            messages=tuple(self._messages()),
            max_tokens=self.max_tokens or self.max_completion_tokens,
            temperature=default_temperature if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=seed_of(seed),
            stop=stops(self.stop),
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            extra=engine_fields(
                self.tools, self.tool_choice, self.response_format, self.parallel_tool_calls
            ),
            editor=editor,
        )

    def answer(
        self, request_id: str, model: str, deltas: Sequence[TextDelta], done: Finished,
        timing: Timing,
    ) -> dict[str, Any]:  # fmt: skip
        message: dict[str, Any] = {"role": "assistant", "content": written(deltas)}
        message.update(merged_fields(deltas))
        return {
            "id": request_id, "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_of(done)}],
            "usage": usage_of(done),
        }  # fmt: skip

    def chunks(self, request_id: str, model: str) -> ChatChunks:
        usage = self.stream_options is not None and self.stream_options.include_usage
        return ChatChunks(request_id, model, separate_usage=usage, mistral=self.mistral)


class MistralChatRequest(ChatRequest):
    mistral: ClassVar[bool] = True


def finish_of(done: Finished) -> str:
    return "length" if done.finish_reason == "model_length" else done.finish_reason


class ChatChunks:
    """The chat stream. OpenAI's clients take tool calls in pieces; Mistral's SDK checks
    each chunk's call whole (a name in every one): on its wire they are sent whole, last."""

    def __init__(self, request_id: str, model: str, *, separate_usage: bool, mistral: bool) -> None:
        self._head = {"id": request_id, "object": "chat.completion.chunk",
                      "created": int(time.time()), "model": model}  # fmt: skip
        self._separate_usage, self._mistral = separate_usage, mistral
        self._held: list[TextDelta] = []  # Mistral's: tool-call pieces, sent whole at the end

    def _choice(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse_json({**self._head, "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]})  # fmt: skip

    def opening(self) -> bytes:
        return self._choice({"role": "assistant", "content": ""})

    def text(self, delta: TextDelta) -> bytes:
        fields = delta.fields or {}
        if self._mistral and "tool_calls" in fields:
            self._held.append(TextDelta("", 0, {"tool_calls": fields["tool_calls"]}))
            fields = {k: v for k, v in fields.items() if k != "tool_calls"}
        if not delta.text and not fields:
            return b""
        return self._choice({"content": delta.text, **fields})

    def finished(self, done: Finished, timing: Timing) -> bytes:
        calls = b""
        if self._held:
            calls = self._choice({"content": "", **merged_fields(self._held)})
        end = {**self._head, "choices": [{"index": 0, "delta": {"content": ""},
                                          "finish_reason": finish_of(done)}]}  # fmt: skip
        if self._mistral and not self._separate_usage:  # asked apart, it comes apart
            end["usage"] = usage_of(done)
        usage = {**self._head, "choices": [], "usage": usage_of(done)}
        return calls + sse_json(end) + (sse_json(usage) if self._separate_usage else b"")

    def failed(self) -> bytes:
        if self._mistral:
            return self._choice({"content": ""}, "error")
        return sse_json({"error": {"message": "the model failed", "type": "engine_error",
                                   "code": 503}})  # fmt: skip

    def closing(self) -> bytes:
        return SSE_DONE


OPENAI = Wire("chat", lambda body: parse_body(body, ChatRequest))
MISTRAL = Wire("chat", lambda body: parse_body(body, MistralChatRequest))
