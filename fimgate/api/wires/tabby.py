"""Tabby's completion wire (``POST /v1/completions`` with ``segments``), as tabby-agent sends
it for Tabby's VS Code, JetBrains and Vim extensions (TabbyML/tabby at 21b2904,
crates/tabby/src/services/completion.rs; clients/tabby-agent).

The segments map onto the one FIM job: ``prefix``/``suffix``; ``declarations`` and the
snippets (changed files first, then recently opened, as Tabby's own prompt builder ranks
them, the most relevant last: nearest the cursor) become repository context, laid out in the
model's repository format with ``filepath`` as the current file; ``clipboard`` and
``edit_history`` are not used for a completion (Tabby's server uses neither for one).
The answer is Tabby's ``{id, choices: [{index, text}], mode}``; Tabby does not stream.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from fimgate.api.wires.base import Timing, seed_of, written
from fimgate.engines.base import Editor, FimJob, Finished, TextDelta
from fimgate.engines.editor_context import ContextFile, EditorContext

# Tabby's server writes at most this many tokens a completion (its max_decoding_tokens).
MAX_TOKENS = 64


class _Strict(BaseModel):
    # Tabby's server ignores fields it does not know (its structs do not deny them), and
    # tabby-agent adds fields over releases: a new one must not stop completions.
    model_config = ConfigDict(extra="ignore")


class Declaration(_Strict):
    filepath: str
    body: str


class Snippet(_Strict):
    filepath: str
    body: str
    score: float


class EditHistory(_Strict):
    original_code: str | None = None
    edits_diff: str | None = None
    current_version: str | None = None


class Segments(_Strict):
    prefix: str
    suffix: str | None = None
    filepath: str | None = None
    git_url: str | None = None
    declarations: list[Declaration] | None = None
    relevant_snippets_from_changed_files: list[Snippet] | None = None
    relevant_snippets_from_recently_opened_files: list[Snippet] | None = None
    clipboard: str | None = None
    edit_history: EditHistory | None = None

    def context(self) -> EditorContext | None:
        files = [
            *(s for s in self.relevant_snippets_from_recently_opened_files or ()),
            *(s for s in self.relevant_snippets_from_changed_files or ()),
            *(d for d in self.declarations or ()),
        ]
        if not files and not self.filepath:
            return None
        repo = (self.git_url or "").rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
        return EditorContext(
            "tabby", repo, tuple(ContextFile(f.filepath, f.body) for f in files),
            self.filepath or "", self.prefix, self.suffix or "",
        )  # fmt: skip


class DebugOptions(_Strict):
    raw_prompt: str | None = None
    return_snippets: bool = False
    return_prompt: bool = False
    disable_retrieval_augmented_code_completion: bool = False


class TabbyRequest(_Strict):
    route: ClassVar[str] = "tabby"

    language: str | None = None
    segments: Segments
    user: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0)
    mode: str = "standard"
    debug_options: DebugOptions | None = None

    @property
    def model_name(self) -> None:
        return None  # Tabby names no model: the server's first

    @property
    def streams(self) -> bool:
        return False

    def job(self, editor: Editor, default_temperature: float) -> FimJob:
        return FimJob(
            prefix=self.segments.prefix,
            suffix=self.segments.suffix or "",
            max_tokens=MAX_TOKENS,
            temperature=default_temperature if self.temperature is None else self.temperature,
            seed=seed_of(self.seed),
            context=self.segments.context(),
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
        return {"id": request_id, "choices": [{"index": 0, "text": text}], "mode": self.mode}

    def chunks(self, request_id: str, model: str) -> Any:
        raise AssertionError("Tabby's completions do not stream")


def is_tabby(body: bytes) -> bool:
    """Whether a ``/v1/completions`` body is Tabby's (it has ``segments``) rather than
    OpenAI's. Cheap: the body is parsed for real by its wire."""
    if b'"segments"' not in body:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "segments" in data and "prompt" not in data


def health(model: str, version: str) -> dict[str, Any]:
    """``/v1/health`` as tabby-agent reads it: a non-empty ``model`` (else it never asks for a
    completion) and a ``version`` object (it reads ``version.git_describe`` unguarded)."""
    return {
        "model": model, "device": "cpu", "arch": platform.machine(),
        "cpu_info": platform.processor() or platform.machine(), "cpu_count": os.cpu_count() or 1,
        "cuda_devices": [], "webserver": None,
        "version": {"build_date": "", "build_timestamp": "", "git_sha": "",
                    "git_describe": f"fimgate-{version}"},
    }  # fmt: skip
