"""llama.cpp's ``POST /infill``, as llama.vscode (3938fb3, src/llama-server.ts) and llama.vim
(a1c8e6e, autoload/llama.vim) send it, answered as llama.cpp's server answers it.

- ``input_prefix`` + ``prompt`` (the cursor's line so far: llama.cpp puts it after the prefix)
  is the FIM prefix, ``input_suffix`` the suffix; ``input_extra`` [{filename, text}] (the
  editors' ring of recently seen chunks) becomes repository context.
- ``n_predict: 0`` reads the prompt into the cache and writes nothing: the editors' warm-ups,
  counted apart (route ``infill_warm``).
- ``n_indent``, ``t_max_predict_ms``, ``top_k``/``top_p``/``temperature``, ``stop``, ``seed``
  are honoured; ``t_max_prompt_ms`` is accepted and, as in llama.cpp, has no effect; so have
  ``id_slot``, ``cache_prompt`` and ``samplers`` (fimgate places and caches by itself, and
  samples with temperature, top-k and top-p). ``n_cmpl`` > 1 (llama.vscode sends 3) gets one
  completion: the editors keep the distinct ones, and greedy ones are all the same.
- ``model`` names a served model, else (llama.vscode sends "google/gemini-2.5-flash" by
  default, llama.vim "") the server's first, as llama.cpp ignores it.
- The answer is llama.cpp's object, compact JSON on one line (llama.vim matches
  ``"content":"`` and reads line by line), with ``response_fields`` applied as llama.cpp
  does (``"timings/prompt_n"`` becomes a flat key), and always ``generation_settings``
  (llama.vscode reads it unguarded). Errors are llama.cpp's ``{"error": {code, message,
  type}}``. A stream is llama.cpp's: ``data:`` events, no ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import JSONResponse

from fimgate.api.errors import ApiError, json_error
from fimgate.api.request_body import parse_body
from fimgate.api.streaming import sse_json
from fimgate.api.wires.base import Timing, Wire, seed_of, written
from fimgate.engines.base import Editor, FimJob, Finished, TextDelta
from fimgate.engines.editor_context import ContextFile, EditorContext

SAMPLERS = ("dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature", "infill",
            "penalties", "top_n_sigma")  # fmt: skip


class ExtraChunk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    filename: str = "tmp"  # llama.cpp's name for a chunk that has none
    time: Any = None  # llama.vscode: ms; llama.vim: [sec, usec]; not used


class LoraAdapter(BaseModel):
    id: int
    scale: float


class InfillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_prefix: str
    input_suffix: str
    input_extra: list[ExtraChunk] = []
    prompt: str = ""
    n_predict: int = Field(default=-1, ge=-1)  # -1: until the model stops (llama.cpp's)
    n_indent: int = Field(default=0, ge=0)
    n_cmpl: int = Field(default=1, ge=1, le=16)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = []
    stream: bool = False
    t_max_prompt_ms: int | None = None
    t_max_predict_ms: int = Field(default=0, ge=0)
    cache_prompt: bool = True
    id_slot: int | None = None
    samplers: list[str] | None = None
    response_fields: list[str] | None = None
    lora: list[LoraAdapter] = Field(default=[], max_length=0)
    model: str | None = None

    @field_validator("samplers")
    @classmethod
    def _known_samplers(cls, samplers: list[str] | None) -> list[str] | None:
        unknown = [s for s in samplers or () if s not in SAMPLERS]
        if unknown:
            raise ValueError(f"unknown samplers {unknown}; llama.cpp's are {list(SAMPLERS)}")
        return samplers

    @property
    def model_name(self) -> str | None:
        return self.model or None

    @property
    def streams(self) -> bool:
        return self.stream

    @property
    def route(self) -> str:
        return "infill_warm" if self.n_predict == 0 else "infill"

    def job(self, editor: Editor, default_temperature: float) -> FimJob:
        prefix = self.input_prefix + self.prompt
        files = tuple(ContextFile(c.filename, c.text) for c in self.input_extra)
        context = EditorContext("infill", "", files, "", prefix, self.input_suffix)
        return FimJob(
            prefix=prefix,
            suffix=self.input_suffix,
            max_tokens=None if self.n_predict < 0 else self.n_predict,
            temperature=default_temperature if self.temperature is None else self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=seed_of(self.seed),
            stop=tuple(self.stop),
            n_indent=self.n_indent,
            max_predict_ms=self.t_max_predict_ms,
            context=context if files else None,
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
        return self._fields(self._final(model, text, done, timing))

    def chunks(self, request_id: str, model: str) -> InfillChunks:
        return InfillChunks(self, model)

    def _final(self, model: str, text: str, done: Finished, timing: Timing) -> dict[str, Any]:
        """llama.cpp's final result object (to_json_non_oaicompat)."""
        n_prompt, n_out = done.prompt_tokens, done.completion_tokens
        return {
            "index": 0, "content": text, "tokens": [], "id_slot": self.id_slot or 0,
            "stop": True, "model": model, "tokens_predicted": n_out,
            "tokens_evaluated": n_prompt, "generation_settings": self._settings(),
            "has_new_line": "\n" in text, "truncated": False,
            "stop_type": "eos" if done.finish_reason == "stop" else "limit",
            "stopping_word": "", "tokens_cached": n_prompt + n_out,
            "timings": _timings(n_prompt, n_out, timing),
        }  # fmt: skip

    def _settings(self) -> dict[str, Any]:
        return {
            "n_predict": self.n_predict, "temperature": self.temperature, "top_k": self.top_k,
            "top_p": self.top_p, "seed": self.seed, "stop": self.stop, "n_indent": self.n_indent,
            "t_max_predict_ms": self.t_max_predict_ms, "stream": self.stream,
        }  # fmt: skip

    def _fields(self, result: dict[str, Any]) -> dict[str, Any]:
        """llama.cpp's response_fields: each path (``a/b``) a flat key of its own."""
        if self.response_fields is None:
            return result
        picked: dict[str, Any] = {}
        for path in self.response_fields:
            value: Any = result
            for key in path.split("/"):
                if not isinstance(value, dict) or key not in value:
                    break
                value = value[key]
            else:
                picked[path] = value
        return picked


def _per(n: int, seconds: float) -> tuple[float | None, float | None]:
    """ms per token and tokens per second; None (llama.cpp's NaN, written null) for none."""
    ms = seconds * 1000
    if n == 0 or ms <= 0:
        return None, None
    return ms / n, n / seconds


def _timings(n_prompt: int, n_out: int, timing: Timing) -> dict[str, Any]:
    prompt_per_token, prompt_per_second = _per(n_prompt, timing.prompt_s)
    out_per_token, out_per_second = _per(n_out, timing.predict_s)
    return {
        "cache_n": 0, "prompt_n": n_prompt, "prompt_ms": timing.prompt_s * 1000,
        "prompt_per_token_ms": prompt_per_token, "prompt_per_second": prompt_per_second,
        "predicted_n": n_out, "predicted_ms": timing.predict_s * 1000,
        "predicted_per_token_ms": out_per_token, "predicted_per_second": out_per_second,
    }  # fmt: skip


class InfillChunks:
    """llama.cpp's /infill stream: ``data:`` events of text, then the final object."""

    def __init__(self, asked: InfillRequest, model: str) -> None:
        self._asked, self._model = asked, model
        self._text = ""

    def opening(self) -> bytes:
        return b""

    def text(self, delta: TextDelta) -> bytes:
        text = delta.text
        self._text += text
        return sse_json({"index": 0, "content": text, "tokens": [], "stop": False,
                      "id_slot": self._asked.id_slot or 0})  # fmt: skip

    def finished(self, done: Finished, timing: Timing) -> bytes:
        final = self._asked._final(self._model, "", done, timing)
        final["has_new_line"] = "\n" in self._text
        return sse_json(self._asked._fields(final))

    def failed(self) -> bytes:
        failure = {"code": 503, "message": "the model failed", "type": "server_error"}
        return sse_json({"error": failure})

    def closing(self) -> bytes:
        return b""  # llama.cpp sends no [DONE] on /infill


def error(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """llama.cpp's error body: ``{"error": {"code", "message", "type"}}``, code = status."""
    body = {"error": {"code": error.status, "message": error.message, "type": error.type}}
    return json_error(body, error, headers)


def parse(body: bytes) -> InfillRequest:
    return parse_body(body, InfillRequest)


WIRE = Wire("infill", parse, error=error, any_model=True)
