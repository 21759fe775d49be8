"""Tools in chat requests (Continue's agent mode, the SDKs), checked here so a malformed one
is the client's 422, not the engine's failure; and tool calls streamed in pieces (OpenAI's
deltas) made whole, for answers that are not streamed and for clients that take calls whole
(Mistral's SDK, Ollama's)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fimgate.engines.base import TextDelta


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionSpec(_Strict):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionCall(_Strict):
    name: str
    arguments: str  # JSON text, as OpenAI has it; Mistral's object form is made text

    @field_validator("arguments", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict) else value


class ToolCall(_Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = None


class NamedFunction(_Strict):
    name: str


class NamedTool(_Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


# Mistral's "any" is OpenAI's "required".
ToolChoice = Literal["auto", "none", "required", "any"] | NamedTool


class JsonSchema(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None


def engine_fields(
    tools: list[Tool] | None, choice: ToolChoice | None, response_format: ResponseFormat | None,
    parallel: bool | None,
) -> dict[str, Any]:  # fmt: skip
    """The request's tool and format fields as the engine (OpenAI's shape) takes them."""
    fields: dict[str, Any] = {}
    if tools is not None:
        fields["tools"] = [t.model_dump(exclude_none=True) for t in tools]
    if choice is not None:
        fields["tool_choice"] = (
            ("required" if choice == "any" else choice)
            if isinstance(choice, str)
            else choice.model_dump()
        )
    if response_format is not None:
        fields["response_format"] = response_format.model_dump(exclude_none=True, by_alias=True)
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    return fields


def merged_fields(deltas: Sequence[TextDelta]) -> dict[str, Any]:
    """A streamed answer's other fields made whole: tool calls joined by their index (their
    arguments come in pieces; a piece with no index goes on the call before it), text fields
    (reasoning) concatenated."""
    calls: dict[int, dict[str, Any]] = {}
    texts: dict[str, str] = {}
    for delta in deltas:
        for name, value in (delta.fields or {}).items():
            if name == "tool_calls":
                for piece in value:
                    _add_piece(calls, piece)
            else:
                texts[name] = texts.get(name, "") + str(value)
    fields: dict[str, Any] = dict(texts)
    if calls:
        fields["tool_calls"] = [calls[i] for i in sorted(calls)]
    return fields


def _add_piece(calls: dict[int, dict[str, Any]], piece: dict[str, Any]) -> None:
    index = piece.get("index")
    if index is None:
        starts = piece.get("id") or (piece.get("function") or {}).get("name") or not calls
        index = len(calls) if starts else max(calls)
    call = calls.setdefault(
        index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    call["id"] = piece.get("id") or call["id"]
    function = piece.get("function") or {}
    call["function"]["name"] += function.get("name") or ""
    arguments = function.get("arguments") or ""
    call["function"]["arguments"] += (
        arguments if isinstance(arguments, str) else json.dumps(arguments)
    )
