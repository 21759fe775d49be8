"""The fast tier's test engine: a transport that needs no model, behind the real app.

What the fast tier tests is everything above the model: the HTTP layer, the serving step,
the gateway (a real SQLite ledger, the real rate limiter), prompt building, completion
shaping and the router. Only the model is stood in for, by ``ScriptedTransport``: a
tokenizer of one token per character (markers are single special tokens, as in Qwen's
vocabulary) and a "model" that writes a scripted text, one token (character) per chunk. It
can be held before a token, made to fail at a token, and it holds its request's turn as
llama.cpp holds a slot. The real model's behaviour is the model tier's (tests/test_*.py with
a server).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fimgate.engines.base import EngineError, GenerationLost
from fimgate.engines.counters import Counters
from fimgate.engines.transports.base import Capabilities, Chunk, Route, Sampling

OFFSET = 1000  # ids below are special tokens
MARKERS = (
    "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|repo_name|>", "<|file_sep|>",
    "<|endoftext|>",
)  # fmt: skip
_LITERAL = re.compile(r'^root ::= "((?:[^"\\]|\\U[0-9a-f]{8})*)"')


def decode(ids: list[int]) -> str:
    return "".join(MARKERS[i] if i < OFFSET else chr(i - OFFSET) for i in ids)


def _unescape(literal: str) -> str:
    return re.sub(r"\\U([0-9a-f]{8})", lambda m: chr(int(m.group(1), 16)), literal)


@dataclass
class Script:
    """What the stand-in model writes: ``write(prompt text)`` is the completion, ended by the
    model unless ``n_predict`` comes first. ``hold_at``: wait at that token until ``resume``
    is set; ``fail_at``: raise an engine failure there (-1: never)."""

    write: Callable[[str], str] = lambda prompt: "return a + b\n"
    hold_at: int = -1
    fail_at: int = -1
    lose_at: int = -1  # the generation is lost there, once (an upstream gone silent)
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)  # set at hold_at
    # A cancelled run lets go of its turn only once this is set, as llama.cpp lets go of a
    # slot a token later (None: at once).
    release: asyncio.Event | None = None


class ScriptedTransport:
    """A transport whose model is a script (see the module's docstring)."""

    def __init__(self, context_length: int = 512, grammar: bool = True) -> None:
        self.capabilities = Capabilities(grammar=grammar, progress=False)
        self.context_length = context_length
        self.script = Script()
        self.prompts: list[list[int]] = []  # every prompt run, in order
        self.chats: list[dict[str, Any]] = []  # every chat request, in order
        self.counters = Counters("requests", "active", "cancelled", "generated_tokens")

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        ids = [ord(c) + OFFSET for c in text]
        return [(i, chr(i - OFFSET)) for i in ids] if pieces else ids

    def special_token(self, marker: str) -> int | None:
        return MARKERS.index(marker) if marker in MARKERS else None

    def bos_token(self) -> str | None:
        return None

    def _output(self, ids: list[int], sampling: Sampling) -> str:
        # A grammar here only ever says what the output starts with (typed_middle.py).
        found = _LITERAL.match(sampling.grammar)
        start = _unescape(found.group(1)) if found else ""
        return start + self.script.write(decode(ids))

    async def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]:
        sampling.check(self.capabilities)
        self.prompts.append(list(ids))
        self.counters.add(requests=1, active=1)
        text = self._output(ids, sampling)
        route.turn.hold()
        finished = False
        try:
            for n in range(sampling.n_predict):
                await self._step(n)
                ended = n >= len(text) - 1 and not sampling.ignore_eos
                char = text[n] if n < len(text) else " "
                self.counters.add(generated_tokens=1)
                last = n == sampling.n_predict - 1
                reason = "stop" if ended else ("length" if last else None)
                finished = reason is not None
                yield Chunk(char, n + 1, reason)
                if ended:
                    return
            finished = True
        finally:
            self.counters.add(active=-1)
            if not finished:
                self.counters.add(cancelled=1)
                route.turn.stop()
            self._let_go(route, finished)

    async def chat(self, body: dict[str, Any], route: Route) -> AsyncIterator[dict[str, Any]]:
        """A chat answer as llama.cpp's chat handler streams it: the script's text for the
        last message, a character a chunk; with ``tools``, a call of the first tool, its
        arguments in two pieces."""
        self.chats.append(body)
        self.counters.add(requests=1)
        limit = body.get("max_tokens", self.context_length)
        text = self.script.write(body["messages"][-1]["content"])[:limit]
        n = 0
        for n, char in enumerate(text, 1):
            await self._step(n - 1)
            yield {"choices": [{"index": 0, "delta": {"content": char}, "finish_reason": None}]}
        reason = "stop" if n < limit else "length"
        if tools := body.get("tools"):
            name = tools[0]["function"]["name"]
            for i, piece in enumerate(('{"x": ', "1}")):
                call = {"index": 0, "function": {"arguments": piece}}
                if i == 0:
                    call |= {"id": "call_1", "type": "function"}
                    call["function"]["name"] = name
                yield {"choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                    "finish_reason": None}]}  # fmt: skip
            n, reason = n + 5, "tool_calls"
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
        prompt = sum(len(m["content"]) for m in body["messages"]) + 7
        yield {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": n}}

    def _let_go(self, route: Route, finished: bool) -> None:
        release = self.script.release
        if finished or release is None:
            route.turn.let_go()
            return

        async def later() -> None:
            await release.wait()
            route.turn.let_go()

        self._later = asyncio.get_running_loop().create_task(later())

    async def _step(self, n: int) -> None:
        script = self.script
        if n == script.fail_at:
            raise EngineError("the stand-in model failed, as scripted")
        if n == script.lose_at:
            script.lose_at = -1
            raise GenerationLost("the stand-in upstream went silent, as scripted")
        if n == script.hold_at:
            script.reached.set()
            await script.resume.wait()
        await asyncio.sleep(0)  # a token's time: other tasks run

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()

    def upstreams(self) -> list[dict[str, object]]:
        return []

    async def aclose(self) -> None:
        return None
