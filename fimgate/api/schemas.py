"""The wire schemas of the API, in one place: what clients send and what they get back.

Requests follow the hosted gateway's OpenAPI (``FIMCompletionRequest``, with
``additionalProperties: false``) plus the fields real clients send:

- ``metadata``, ``prompt_cache_key``: sent by the current mistralai SDK. Accepted; neither
  changes the completion (``prompt_cache_key`` is not needed: the prompt cache is automatic).
- ``max_completion_tokens``: sent by Continue when a user sets it; honoured as ``max_tokens``.
- ``frequency_penalty``, ``presence_penalty``: sent by Continue when a user sets them; honoured
  (llama.cpp implements both), range -2..2 as in the OpenAI API.

Any other field is a 422 that names it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fimgate.engines.base import FinishReason as EngineFinishReason


class FimCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str
    suffix: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.5)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=0)
    min_tokens: int | None = Field(default=None, ge=0)
    stream: bool | None = False
    stop: str | list[str] | None = None
    random_seed: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    max_completion_tokens: int | None = Field(default=None, ge=0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    @model_validator(mode="after")
    def _consistent(self) -> FimCompletionRequest:
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            raise ValueError("max_tokens and max_completion_tokens differ; send one of them")
        limit = self.token_limit
        if limit is not None and self.min_tokens is not None and self.min_tokens > limit:
            raise ValueError(f"min_tokens ({self.min_tokens}) exceeds max_tokens ({limit})")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


# The engine's reasons, and "error": a stream whose engine failed after its first token.
FinishReason = EngineFinishReason | Literal["error"]


class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    prefix: bool = False


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason


class FimCompletionResponse(BaseModel):
    """The JSON answer. The hosted schema also lists a required ``data`` field (its example
    says ``"data": "asd"``); Mistral's own API sends none and clients ignore it, so we omit it."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    model: str
    created: int
    usage: UsageInfo
    choices: list[ChatCompletionChoice]


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=lambda v: v is None)
    # Always a string, never null: at least one client panics on a null delta.
    content: str = ""


class StreamChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: FinishReason | None = None  # present on every chunk, null until the last


class CompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[StreamChoice]
    usage: UsageInfo | None = Field(default=None, exclude_if=lambda v: v is None)  # last chunk


class ModelCapabilities(BaseModel):
    completion_chat: bool = True
    completion_fim: bool = True
    function_calling: bool = False
    fine_tuning: bool = False
    vision: bool = False
    classification: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "fimgate"
    capabilities: ModelCapabilities = Field(default_factory=ModelCapabilities)
    name: str
    description: str
    max_context_length: int
    aliases: list[str]
    deprecation: None = None
    default_model_temperature: float
    type: Literal["base"] = "base"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
