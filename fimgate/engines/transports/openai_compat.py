"""An upstream that speaks OpenAI's ``/v1/completions`` and takes token-id prompts: vLLM,
SGLang, llama.cpp's own ``/v1/completions``.

Such an API has no tokenizer that keeps user text as text, so this transport borrows one:
a llama.cpp ``/tokenize`` (``parse_special: false``) at ``tokenizer_url``, by default the
upstream itself (llama.cpp has it; for vLLM or SGLang, point it at a llama.cpp server with
the same model). The prompt goes as token ids, so a marker written in user text stays text.
No grammar is assumed: the prompt keeps the typed text as typed (prompt_builder.py). Nor a
time bound: a deployment that sets one cannot use such upstreams (fim_engine.py refuses).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from fimgate.engines.base import EngineError
from fimgate.engines.transports.base import Capabilities, Chunk, Route, Sampling
from fimgate.engines.transports.http_upstream import (
    HttpUpstream,
    UpstreamUnavailable,
    stream_events,
)


class OpenAICompatible(HttpUpstream):
    capabilities = Capabilities(grammar=False, time_bound=False)

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        model: str | None = None,
        tokenizer_url: str | None = None,
    ) -> None:
        super().__init__(url, api_key, tokenizer_url)
        listed = self._models()
        self.model = model or listed["id"]
        # vLLM says how long a sequence may be; llama.cpp says it in /props.
        self.context_length = int(listed.get("max_model_len") or self._api.context_length())
        self.slots: int | None = None  # vLLM and SGLang batch whatever comes: no fixed count

    def _models(self) -> dict[str, Any]:
        try:
            with httpx.Client(base_url=self.url, headers=self._headers, timeout=30) as client:
                return client.get("/v1/models").raise_for_status().json()["data"][0]
        except (httpx.HTTPError, KeyError, IndexError) as exc:
            raise EngineError(f"{self.url}/v1/models lists no model: {exc!r}") from exc

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.model}

    async def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]:
        sampling.check(self.capabilities)
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": ids,
            "max_tokens": sampling.n_predict,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "frequency_penalty": sampling.frequency_penalty,
            "presence_penalty": sampling.presence_penalty,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # vLLM, SGLang and llama.cpp all take it
        if sampling.ignore_eos:
            body["ignore_eos"] = True  # vLLM, SGLang and llama.cpp all take it
        self._counters.add(active=1, requests=1, prompt_tokens_sent=len(ids))
        predicted, finished = 0, False
        events = stream_events(self._http(), "/v1/completions", body)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    if usage := event.get("usage"):  # the exact count, at the end
                        self._counters.add(generated_tokens=usage["completion_tokens"] - predicted)
                        predicted = usage["completion_tokens"]
                    if not event.get("choices"):
                        continue
                    choice = event["choices"][0]
                    text = choice.get("text") or ""
                    if text:
                        predicted += 1  # one token per event, until the usage says otherwise
                        self._counters.add(generated_tokens=1)
                    reason = choice.get("finish_reason")
                    finished = finished or reason is not None
                    if reason is not None:
                        reason = "stop" if reason == "stop" else "length"
                    yield Chunk(text, predicted, reason)
            if not finished:
                raise UpstreamUnavailable(f"{self.url}: the stream ended before its last event")
        finally:
            self._counters.add(active=-1, cancelled=int(not finished))
