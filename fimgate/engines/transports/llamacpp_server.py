"""An upstream llama.cpp server (``llama-server``, or ``fimgate engine-server``), over HTTP:
``/completion`` with token-id prompts, its ``/tokenize`` (user text as text), ``cache_prompt``,
grammars. The slot a prompt lands in is llama.cpp's own choice: the slot whose cached prompt
shares the most with it, which is what keeps an editor's keystrokes warm there."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fimgate.engines.transports.base import Capabilities, Chunk, Route, Sampling
from fimgate.engines.transports.http_upstream import (
    HttpUpstream,
    UpstreamUnavailable,
    stream_events,
)
from fimgate.engines.transports.llamacpp_api import llama_request, prompt_tokens_read


class LlamaCppServer(HttpUpstream):
    capabilities = Capabilities(grammar=True)

    def __init__(self, url: str, api_key: str | None = None) -> None:
        super().__init__(url, api_key)
        self.context_length = self._api.context_length()
        # Requests it serves at once; the router sends more only where every other is fuller.
        self.slots: int | None = self._api.props().get("total_slots")

    async def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]:
        """One completion; every option of ``sampling`` is llama.cpp's own. ``route`` is the
        router's: it chose this server."""
        body = llama_request(ids, sampling)
        self._counters.add(active=1, requests=1, prompt_tokens_sent=len(ids))
        predicted, computed, finished = 0, 0, False
        events = stream_events(self._http(), "/completion", body)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    # Counted as it goes: a request cancelled before its end, even before its
                    # first token, read what it read.
                    computed = max(computed, prompt_tokens_read(event))
                    if "prompt_progress" in event:
                        continue  # not a token: the router's retry holds until the first one
                    now = event.get("tokens_predicted", predicted)
                    self._counters.add(generated_tokens=now - predicted)
                    predicted = now
                    reason = None
                    if event.get("stop"):
                        finished = True
                        reason = "stop" if event.get("stop_type") in ("eos", "word") else "length"
                    yield Chunk(event.get("content") or "", predicted, reason)
            if not finished:  # the connection closed cleanly, but the answer is cut
                raise UpstreamUnavailable(f"{self.url}: the stream ended before its last event")
        finally:
            self._counters.add(
                active=-1, cancelled=int(not finished), prompt_tokens_computed=computed
            )
