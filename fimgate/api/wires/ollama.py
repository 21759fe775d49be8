"""Ollama's wire: ``POST /api/generate`` with ``suffix`` (Continue's ``ollama`` provider, the
``ollama`` Python client, Zed's and many editors' Ollama plugins), NDJSON streaming (the
default, as Ollama's), and the model probes those clients make (``/api/tags``, ``/api/show``,
``/api/version``). Read from ollama/ollama at fb30760 (docs/api.md, api/types.go) and
ollama-python at 25b9329 (its pydantic types are what it checks answers against).

- ``prompt`` + ``suffix`` is the FIM job; ``raw: true`` with no suffix is a prompt the client
  laid out itself (Continue's templates, Zed's: wires/laid_out.py), else text.
- ``options``: ``num_predict``, ``temperature``, ``top_p``, ``top_k``, ``stop``, ``seed``,
  ``frequency_penalty``, ``presence_penalty`` are honoured; how Ollama would run the model
  (``num_ctx``, ``num_thread``, ``num_gpu``, ``use_mmap``, ``keep_alive``...) is accepted and
  means nothing here (the server's context is ``/api/show``'s ``num_ctx``, which Continue
  reads); samplers fimgate does not have are accepted at their neutral value only.
- ``/api/show``'s template holds ``.Suffix``: Continue's sign that the model does FIM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import JSONResponse

from fimgate.api.errors import ApiError, json_error
from fimgate.api.request_body import parse_body
from fimgate.api.streaming import ndjson
from fimgate.api.wires.base import NDJSON, Timing, Wire, seed_of, stops, written
from fimgate.api.wires.laid_out import read_laid_out
from fimgate.api.wires.tools import Tool, engine_fields, merged_fields
from fimgate.engines.base import ChatJob, Editor, FimJob, Finished, TextDelta

# What /api/version says: the Ollama API version this wire follows.
OLLAMA_VERSION = "0.12.0"

# Options about running the model, which fimgate's operator decides: accepted, unused.
# mirostat_tau and mirostat_eta tune mirostat, which is off (below).
RUNTIME_OPTIONS = ("num_ctx", "num_thread", "num_gpu", "main_gpu", "use_mmap", "use_mlock",
                   "num_batch", "low_vram", "numa", "vocab_only", "num_keep", "f16_kv",
                   "logits_all", "embedding_only", "mirostat_tau", "mirostat_eta")  # fmt: skip
# Samplers fimgate does not have, and the value at which each does nothing.
NEUTRAL = {"mirostat": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0,
           "repeat_last_n": 64, "tfs_z": 1.0, "penalize_newline": False}  # fmt: skip


class Options(BaseModel):
    model_config = ConfigDict(extra="allow")

    num_predict: int | None = Field(default=None, ge=-2)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    @model_validator(mode="after")
    def _known(self) -> Options:
        for name, value in (self.model_extra or {}).items():
            if name in RUNTIME_OPTIONS or value is None:
                continue
            if name not in NEUTRAL:
                raise ValueError(f"unknown option '{name}'")
            if value != NEUTRAL[name]:
                raise ValueError(
                    f"option '{name}' is not supported here (only its neutral value "
                    f"{json.dumps(NEUTRAL[name])}); leave it out"
                )
        return self

    def limit(self) -> int | None:
        """``num_predict``: a negative one (Ollama's "until the end") is none."""
        n = self.num_predict
        return None if n is None or n < 0 else n

    def sampling(self, default_temperature: float) -> dict[str, Any]:
        """The job's sampling fields, the server's defaults filled in (both Ollama wires)."""
        return {
            "temperature": default_temperature if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "seed": seed_of(self.seed),
            "stop": stops(self.stop),
            "frequency_penalty": self.frequency_penalty or 0.0,
            "presence_penalty": self.presence_penalty or 0.0,
        }


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    prompt: str = ""
    suffix: str | None = None
    raw: bool = False
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    system: Literal[""] | None = None
    template: Literal[""] | None = None
    context: list[int] | None = Field(default=None, max_length=0)
    format: None = None
    images: list[str] | None = Field(default=None, max_length=0)
    think: Literal[False] | None = None

    @property
    def model_name(self) -> str:
        return untagged(self.model)

    @property
    def streams(self) -> bool:
        return self.stream

    @property
    def route(self) -> str:
        return "ollama"

    def job(self, editor: Editor, default_temperature: float) -> FimJob:
        laid_out = read_laid_out(self.prompt, "") if self.raw and not self.suffix else None
        return FimJob(
            prefix=laid_out.prefix if laid_out else self.prompt,
            suffix=laid_out.suffix if laid_out else self.suffix or "",
            max_tokens=self.options.limit(),
            top_k=self.options.top_k or 0,
            **self.options.sampling(default_temperature),
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
        return {**_line(model, text), **_done(done, timing)}

    def chunks(self, request_id: str, model: str) -> GenerateLines:
        return GenerateLines(model)


def untagged(model: str) -> str:
    """A model's name without the tag Ollama puts on a name that has none."""
    return model.removesuffix(":latest")


def created_at() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _line(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "created_at": created_at(), "response": text, "done": False}


def _done(done: Finished, timing: Timing) -> dict[str, Any]:
    ns = 1_000_000_000
    return {
        "done": True,
        "done_reason": "length" if done.finish_reason in ("length", "model_length") else "stop",
        "total_duration": int(timing.total_s * ns), "load_duration": 0,
        "prompt_eval_count": done.prompt_tokens, "prompt_eval_duration": int(timing.prompt_s * ns),
        "eval_count": done.completion_tokens, "eval_duration": int(timing.predict_s * ns),
    }  # fmt: skip


class GenerateLines:
    """Ollama's stream: a JSON line per piece of text, the last with ``done: true``."""

    def __init__(self, model: str) -> None:
        self._model = model

    def opening(self) -> bytes:
        return b""

    def text(self, delta: TextDelta) -> bytes:
        text = delta.text
        return ndjson(_line(self._model, text))

    def finished(self, done: Finished, timing: Timing) -> bytes:
        return ndjson({**_line(self._model, ""), **_done(done, timing)})

    def failed(self) -> bytes:
        return ndjson({"error": "the model failed"})  # Ollama's error after the stream began

    def closing(self) -> bytes:
        return b""


def error(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """Ollama's error body, ``{"error": message}``, which its clients raise with the status."""
    return json_error({"error": error.message}, error, headers)


def parse(body: bytes) -> GenerateRequest:
    return parse_body(body, GenerateRequest)


WIRE = Wire("ollama", parse, media_type=NDJSON, error=error)


# -- /api/chat ---------------------------------------------------------------------------------


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = Field(default=None, max_length=0)
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class ChatRequest(BaseModel):
    """Ollama's chat: the messages to the model's own chat template (engines/chat.py)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    stream: bool = True
    options: Options = Field(default_factory=Options)
    keep_alive: str | int | float | None = None
    format: None = None
    think: Literal[False] | None = None

    @property
    def model_name(self) -> str:
        return untagged(self.model)

    @property
    def streams(self) -> bool:
        return self.stream

    @property
    def route(self) -> str:
        return "ollama_chat"

    def job(self, editor: Editor, default_temperature: float) -> ChatJob:
        messages = tuple(
            {"role": m.role, "content": m.content, **({"tool_calls": _openai_calls(m.tool_calls)}
                                                      if m.tool_calls else {})}
            for m in self.messages
        )  # fmt: skip
        return ChatJob(
            messages=messages,
            max_tokens=self.options.limit() or None,  # 0: no limit here (a chat is no warm-up)
            **self.options.sampling(default_temperature),
            extra=engine_fields(self.tools, None, None, None),
            editor=editor,
        )

    def answer(
        self, request_id: str, model: str, deltas: Sequence[TextDelta], done: Finished,
        timing: Timing,
    ) -> dict[str, Any]:  # fmt: skip
        return {**_chat_line(model, written(deltas), _calls(deltas)), **_done(done, timing)}

    def chunks(self, request_id: str, model: str) -> ChatLines:
        return ChatLines(model)


def _openai_calls(calls: list[OllamaToolCall]) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments an object) as OpenAI's (arguments a JSON string)."""
    return [{"type": "function", "function": {"name": call.function.name,
                                              "arguments": json.dumps(call.function.arguments)}}
            for call in calls]  # fmt: skip


def _calls(deltas: Sequence[TextDelta]) -> list[dict[str, Any]]:
    """OpenAI's streamed tool calls, made whole, in Ollama's shape."""
    calls = merged_fields(deltas).get("tool_calls", [])
    made = []
    for call in calls:
        try:
            arguments = json.loads(call["function"]["arguments"] or "{}")
        except ValueError:
            arguments = call["function"]["arguments"]
        made.append({"function": {"name": call["function"]["name"], "arguments": arguments}})
    return made


def _chat_line(model: str, text: str, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return {"model": model, "created_at": created_at(), "message": message, "done": False}


class ChatLines:
    """Ollama's chat stream: a line per piece of text; tool calls whole in the last line."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._deltas: list[TextDelta] = []

    def opening(self) -> bytes:
        return b""

    def text(self, delta: TextDelta) -> bytes:
        if delta.fields:
            self._deltas.append(delta)
        return ndjson(_chat_line(self._model, delta.text)) if delta.text else b""

    def finished(self, done: Finished, timing: Timing) -> bytes:
        last = _chat_line(self._model, "", _calls(self._deltas))
        return ndjson({**last, **_done(done, timing)})

    def failed(self) -> bytes:
        return ndjson({"error": "the model failed"})

    def closing(self) -> bytes:
        return b""


CHAT_WIRE = Wire(
    "ollama_chat", lambda body: parse_body(body, ChatRequest), media_type=NDJSON, error=error
)


# -- the model probes -------------------------------------------------------------------------


class ShowRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    name: str | None = None  # the older name, which Continue still sends
    verbose: bool | None = None

    def wanted(self) -> str:
        if not (self.model or self.name):
            raise ApiError(400, "model is required")
        return untagged(self.model or self.name or "")


FIM_TEMPLATE = (
    "{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
    "{{- else }}{{ .Prompt }}{{- end }}"
)


def details() -> dict[str, Any]:
    return {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
            "parameter_size": "", "quantization_level": ""}  # fmt: skip


def tag(name: str, modified: datetime) -> dict[str, Any]:
    """One model of ``/api/tags`` (Zed needs every field, ollama-python a date)."""
    return {"name": name, "model": name, "modified_at": modified.isoformat(), "size": 0,
            "digest": "", "details": details()}  # fmt: skip


def show(context_length: int, modified: datetime) -> dict[str, Any]:
    return {
        "modelfile": "", "template": FIM_TEMPLATE,
        "parameters": f'num_ctx {context_length}\nstop "<|endoftext|>"',
        "details": details(),
        "model_info": {"general.architecture": "qwen2", "qwen2.context_length": context_length},
        "capabilities": ["completion", "insert"], "modified_at": modified.isoformat(),
    }  # fmt: skip
