"""One chat answer inside the in-process llama.cpp, keystrokes first.

A chat answer is hundreds of tokens; while it is written, every keystroke's completion
shares each llama.cpp batch, and the cores, with it (even one answered from a suggestion,
without the model, waits for a core). So a chat steps out while someone types: while a
completion waits for its first token, or one was asked for in the last ``TYPING_S``. At its
next token (or prompt batch) it stops, waits until neither holds (at most ``PAUSE_MAX_S``),
and goes on where it stopped, its text so far sent again as the answer's start (llama.cpp
goes on from a last assistant message, and every token of it is still in the slot's
cache). Between two steps out it writes at least ``MIN_RUN`` tokens, so a steady typist
slows a chat but cannot stop it. Once it has started a tool call it does not step out: a
call cannot be split.

Runs in a worker thread (llama.cpp's handler blocks); ``forward`` hands chunks to the loop.
The usage it reports is the whole answer's: the first prompt, and every token written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fimgate.engines.flights import Flight, Flights

PAUSE_MAX_S = 2.0
MIN_RUN = 4
TYPING_S = 0.5  # an editor's requests come a keystroke pause apart: ~0.2-0.5 s


class ChatRun:
    def __init__(
        self, request: dict[str, Any], flight: Flight, flights: Flights,
        forward: Callable[[dict[str, Any]], None], typing: Callable[[float], bool],
    ) -> None:  # fmt: skip
        self._request, self._flight, self._flights = request, flight, flights
        self._typing = typing
        self._forward = forward
        self._text = ""  # the answer so far
        self._prompt: int | None = None  # the first submission's prompt tokens
        self._written = 0  # tokens written by the submissions before this one
        self._now = 0  # tokens written by this submission
        self._calling = False  # a tool call has started: no stepping out
        self._stepped_out = False
        self.pauses = 0

    def run(
        self, handle: Callable[[dict[str, Any], Callable[[dict[str, Any]], bool]], Any]
    ) -> None:
        request = self._request
        while True:
            self._stepped_out = False
            handle(request, self._on_chunk)
            if not self._stepped_out or self._flight.cancel.is_set():
                return
            self.pauses += 1
            deadline = time.monotonic() + PAUSE_MAX_S
            while self._someone_types() and time.monotonic() < deadline:
                time.sleep(0.005)
            self._written += self._now
            self._now = 0
            request = self._again()

    def _again(self) -> dict[str, Any]:
        """The request that goes on from the answer so far."""
        again = dict(self._request)
        if self._text:
            again["messages"] = [*self._request["messages"],
                                 {"role": "assistant", "content": self._text}]  # fmt: skip
        if (limit := self._request.get("max_tokens")) is not None:
            again["max_tokens"] = max(1, limit - self._written)
        return again

    def _on_chunk(self, chunk: dict[str, Any]) -> bool:
        self._flight.started.set()
        timings = chunk.get("timings") or {}
        if self._prompt is None and chunk.get("choices") and timings.get("prompt_n"):
            self._prompt = timings["prompt_n"] + timings.get("cache_n", 0)
        self._now = max(self._now, timings.get("predicted_n", 0))
        if "prompt_progress" in chunk and not chunk.get("choices"):
            return self._step_out() or self._flight.cancel.is_set()
        finished = False
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            self._text += delta.get("content") or ""
            self._calling = self._calling or bool(delta.get("tool_calls"))
            finished = finished or choice.get("finish_reason") is not None
        if usage := chunk.get("usage"):
            chunk = {**chunk, "usage": self._usage(usage)}
        self._forward(chunk)
        if finished or "usage" in chunk:
            return self._flight.cancel.is_set()
        return self._step_out() or self._flight.cancel.is_set()

    def _usage(self, usage: dict[str, int]) -> dict[str, int]:
        prompt = usage["prompt_tokens"] if not self.pauses or self._prompt is None else self._prompt
        completion = self._written + usage["completion_tokens"]
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    def _someone_types(self) -> bool:
        return self._flights.keystrokes() or self._typing(TYPING_S)

    def _step_out(self) -> bool:
        if self._calling or not self._someone_types():
            return False
        if self.pauses and self._now < MIN_RUN:  # it went on: a few tokens first
            return False
        self._stepped_out = True
        return True
