"""What every upstream server over HTTP shares: its tokenizer (a llama.cpp ``/tokenize``),
its health, its connection, reading its streamed completions, and the failures that say the
upstream (not the request) is at fault, which a router may retry elsewhere."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from fimgate.engines.base import EngineError, EngineRefused
from fimgate.engines.counters import Counters
from fimgate.engines.transports.base import Route
from fimgate.engines.transports.llamacpp_api import LlamaCppApi, LlamaCppTokenizer


class UpstreamUnavailable(EngineError):
    """The upstream could not be reached or failed on its side (connection, 5xx)."""


async def stream_events(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of a streamed POST; closing this iterator closes the connection, and
    llama.cpp and vLLM stop generating when theirs closes."""
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code >= 500:
                raise UpstreamUnavailable(f"{client.base_url}: HTTP {response.status_code}")
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")[:300]
                refused = EngineRefused if response.status_code == 400 else EngineError
                raise refused(f"{client.base_url}: HTTP {response.status_code}: {text}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise EngineError(f"{client.base_url}: {event['error']}")
                yield event
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"{client.base_url}: {exc!r}") from exc


class HttpUpstream(LlamaCppTokenizer):
    def __init__(self, url: str, api_key: str | None, tokenizer_url: str | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._api = LlamaCppApi(tokenizer_url or self.url, self._headers)
        self._client: httpx.AsyncClient | None = None
        self._counters = Counters(
            "active",
            "requests",
            "cancelled",
            "generated_tokens",
            "prompt_tokens_sent",
            "prompt_tokens_computed",
        )

    async def health(self, timeout: float) -> bool:
        """Whether the server answers ``/health`` with 200 (503 while it loads) in time."""
        try:
            response = await self._http().get("/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def busy_slots(self) -> int | None:
        """How many slots llama.cpp is working in (``/slots``); None where it has none."""
        response = await self._http().get("/slots", timeout=5)
        if response.status_code != 200:
            return None
        return sum(1 for slot in response.json() if slot.get("is_processing"))

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat request as this server takes it (vLLM wants its model named)."""
        return body

    async def chat(self, body: dict[str, Any], route: Route) -> AsyncIterator[dict[str, Any]]:
        """One chat answer from the server's ``/v1/chat/completions`` (llama.cpp's and
        vLLM's apply the model's own template, tools included), its OpenAI chunks."""
        self._counters.add(active=1, requests=1)
        events = stream_events(self._http(), "/v1/chat/completions", self.chat_body(body))
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            self._counters.add(active=-1)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No read timeout: a prompt may take long to read; a hung server is the health
            # check's to find (router.py), not a wall-clock rule's.
            timeout = httpx.Timeout(None, connect=10)
            self._client = httpx.AsyncClient(
                base_url=self.url, headers=self._headers, timeout=timeout
            )
        return self._client

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def upstreams(self) -> list[dict[str, object]]:
        return []  # it is one: the router over it says how it stands

    async def aclose(self) -> None:
        await self._api.aclose()
        if self._client is not None:
            await self._client.aclose()
