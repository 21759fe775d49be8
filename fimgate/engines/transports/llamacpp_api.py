"""llama.cpp's server HTTP API, as both the in-process engine's private listener and an
upstream llama.cpp server speak it: the tokenizer, the vocabulary probes, ``/props``."""

from __future__ import annotations

from typing import Any

import httpx

from fimgate.engines.base import EngineError
from fimgate.engines.transports.base import Sampling

# llama.cpp's LLAMA_DEFAULT_SEED: a random seed per request.
DEFAULT_SEED = 0xFFFFFFFF


def llama_request(ids: list[int], sampling: Sampling) -> dict[str, Any]:
    """llama.cpp's completion request for ``ids`` (its ``/completion`` takes the same)."""
    return {
        "prompt": ids,
        "n_predict": sampling.n_predict,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        # Mistral's API has no top_k/min_p: llama.cpp's defaults are off, so temperature and
        # top_p mean what the Mistral API says they mean (/infill's clients may set top_k).
        "top_k": sampling.top_k,
        "min_p": 0.0,
        "frequency_penalty": sampling.frequency_penalty,
        "presence_penalty": sampling.presence_penalty,
        "seed": sampling.seed if sampling.seed is not None else DEFAULT_SEED,
        "ignore_eos": sampling.ignore_eos,
        "stream": True,
        "cache_prompt": True,
        "return_progress": True,
        "timings_per_token": True,
        "t_max_predict_ms": sampling.max_predict_ms,
        "grammar": sampling.grammar,
    }


def prompt_tokens_read(event: dict[str, Any]) -> int:
    """Prompt tokens llama.cpp has read for a request so far, from one of its streamed events
    (the rest came from its cache): a batch's progress while the prompt is read, then each
    token's timings."""
    read = (event.get("timings") or {}).get("prompt_n", 0)
    if progress := event.get("prompt_progress"):
        read = max(read, progress["processed"] - progress["cache"])
    return read


class LlamaCppApi:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = headers or {}
        self._client: httpx.AsyncClient | None = None
        self._props: dict[str, Any] | None = None
        self._special: dict[str, int | None] = {}  # marker: its id, as probed

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A blocking call, for what is asked once at start (not on a request's path)."""
        with httpx.Client(base_url=self.base_url, headers=self._headers, timeout=30) as client:
            return client.request(method, path, json=body).raise_for_status().json()

    def props(self) -> dict[str, Any]:
        if self._props is None:
            self._props = self._call("GET", "/props")
        return self._props

    def context_length(self) -> int:
        """Tokens one request may hold (per slot, as the server was started)."""
        props = self.props()
        return int(props.get("n_ctx") or props["default_generation_settings"]["n_ctx"])

    def special_token(self, marker: str) -> int | None:
        """The id of ``marker`` when the vocabulary has it as one token."""
        if not marker:
            return None
        if marker not in self._special:  # probed again by every upstream that joins
            body = {"content": marker, "parse_special": True, "add_special": False}
            ids = self._call("POST", "/tokenize", body)["tokens"]
            self._special[marker] = ids[0] if len(ids) == 1 else None
        return self._special[marker]

    def bos_token(self) -> str | None:
        return self.props().get("bos_token") or None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=60
            )
        return self._client

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        """Token ids (``pieces``: ``(id, piece)`` pairs) of user text, markers not parsed."""
        if not text:
            return []
        body = {"content": text, "parse_special": False, "add_special": False}
        try:
            response = await self.client().post("/tokenize", json={**body, "with_pieces": pieces})
        except httpx.HTTPError as exc:
            raise EngineError(f"tokenizer unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise EngineError(f"tokenizer failed: HTTP {response.status_code}")
        tokens = response.json()["tokens"]
        return [(t["id"], t["piece"]) for t in tokens] if pieces else tokens

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class LlamaCppTokenizer:
    """The tokenizer part of a transport, where llama.cpp's ``/tokenize`` is the tokenizer."""

    _api: LlamaCppApi

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        return await self._api.tokenize(text, pieces)

    def special_token(self, marker: str) -> int | None:
        return self._api.special_token(marker)

    def bos_token(self) -> str | None:
        return self._api.bos_token()
