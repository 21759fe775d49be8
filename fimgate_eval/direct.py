"""The ceiling: llama.cpp straight (xllamacpp in-process, one sequence, nothing cached between
tasks that they do not share), fed the model's own full FIM prompt, with no caps, no layout
of fimgate's and no stop rule of its own: what the model gives when nothing stands between.

Markers are special tokens and every byte of text is tokenized as text, as fimgate does: a
task's snippet holding ``<|file_sep|>`` stays text.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import xllamacpp

# A prompt as segments: a marker (special token) is ("special", "<|fim_prefix|>"), text is
# ("text", "...").
Segment = tuple[str, str]


@dataclass(frozen=True)
class DirectCompletion:
    text: str
    tokens: int
    seconds: float


class DirectLlama:
    def __init__(self, model: Path, threads: int, n_ctx: int = 8192) -> None:
        params = xllamacpp.CommonParams()
        params.model.path = str(model)
        params.n_ctx, params.n_parallel = n_ctx, 1
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
        params.n_batch = params.n_ubatch = 256
        params.cache_prompt = True
        params.verbosity = -1
        key = secrets.token_urlsafe(24)
        params.api_keys = [key]
        self._server = xllamacpp.Server(params)
        url = self._server.listening_address
        self._http = httpx.Client(
            base_url=url if url.startswith("http") else f"http://{url}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )

    def tokens(self, segments: list[Segment]) -> list[int]:
        ids: list[int] = []
        for kind, text in segments:
            if not text:
                continue
            special = kind == "special"
            body = {"content": text, "parse_special": special, "add_special": False}
            found = self._http.post("/tokenize", json=body).json()["tokens"]
            if special and len(found) != 1:
                raise ValueError(f"{text!r} is not one token of this model")
            ids += found
        return ids

    def complete(
        self, ids: list[int], max_tokens: int, enough: Callable[[str], bool]
    ) -> DirectCompletion:
        """Greedy, until the model ends, ``max_tokens``, or ``enough(text so far)``."""
        text: list[str] = []
        count = 0

        def on_chunk(chunk: dict[str, Any]) -> bool:
            nonlocal count
            if not chunk.get("choices"):
                return False
            text.append(chunk["choices"][0].get("text") or "")
            count = (chunk.get("timings") or {}).get("predicted_n", count + 1)
            return enough("".join(text))

        request = {
            "prompt": ids, "n_predict": max_tokens, "temperature": 0, "top_k": 0, "min_p": 0.0,
            "stream": True, "cache_prompt": True, "timings_per_token": True,
        }  # fmt: skip
        started = time.perf_counter()
        self._server.handle_completions(request, on_chunk)
        return DirectCompletion("".join(text), count, time.perf_counter() - started)

    def close(self) -> None:
        self._http.close()
        self._server = None  # type: ignore[assignment]
