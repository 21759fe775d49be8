"""The embedded transport: llama.cpp's own server engine, in-process, through xllamacpp.

Why this binding: it runs llama.cpp's server loop (slots, continuous batching, prompt cache)
in-process with the GIL released, installs as a prebuilt wheel in seconds, and decodes as
fast as llama-cpp-python's build here (see docs/engine.md). Its Python surface is narrow:

- ``Server.handle_completions(request, callback)`` blocks until done, so it runs in a worker
  thread and streams through the callback; the callback returning True stops generation at
  the next token (or the next prompt batch, with ``return_progress``). Every request goes this
  way, streaming or not, so every request can be cancelled.
- There is no tokenizer API, but the extension module exports llama.cpp's C API:
  ``LlamaVocab`` (llama_vocab.py) loads the GGUF's vocabulary alone and tokenizes through
  ctypes, user text as plain text (only the FIM markers become special tokens), as the
  engine's ``/tokenize`` does, without an HTTP round trip per call (4 or more a request).
- xllamacpp opens llama.cpp's HTTP listener anyway (loopback, random port); a random key
  keeps everything else on the machine out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xllamacpp

from fimgate.engines.base import EngineError, EngineRefused
from fimgate.engines.counters import Counters
from fimgate.engines.flights import Flight, Flights, computed_over
from fimgate.engines.transports.base import Capabilities, Chunk, Route, Sampling
from fimgate.engines.transports.chat_run import ChatRun
from fimgate.engines.transports.llama_vocab import LlamaVocab
from fimgate.engines.transports.llamacpp_api import llama_request, prompt_tokens_read
from fimgate.settings import EngineSettings

_END = object()
# Texts up to this many chars are tokenized on the event loop (under 0.5 ms); longer ones
# (a prefix, a whole suffix: about 1 ms per 1,000 chars) in a thread, where the GIL is
# released, so the loop goes on and the texts of one prompt are tokenized side by side.
# bench/tokenize_cost.py measures both ways.
INLINE_CHARS = 512


def llama_params(model_path: Path, settings: EngineSettings) -> xllamacpp.CommonParams:
    """llama.cpp's server parameters as fimgate runs it (``engine-server`` too)."""
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = settings.n_ctx
    params.n_parallel = settings.n_parallel
    # One KV pool shared by all slots: otherwise n_ctx is split per slot.
    params.kv_unified = True
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.n_batch = settings.n_batch
    params.n_ubatch = settings.n_batch
    params.cache_prompt = True
    params.cache_ram_mib = settings.cache_ram_mib
    params.verbosity = -1
    return params


class InProcessLlamaCpp:
    capabilities = Capabilities(grammar=True, progress=True)

    def __init__(
        self, model_path: Path, settings: EngineSettings,
        typing: Callable[[float], bool] = lambda within: False,
    ) -> None:  # fmt: skip
        """``typing(within)``: whether an editor asked for a completion that recently (the
        editors' sessions know): a chat steps out for it (chat_run.py)."""
        self._typing = typing
        params = llama_params(model_path, settings)
        params.api_keys = [secrets.token_urlsafe(32)]
        self._server = xllamacpp.Server(params)
        # After the server: its start routes llama.cpp's log, which the load would fill.
        self._vocab = LlamaVocab(model_path)
        self.context_length = settings.n_ctx
        self._pool = ThreadPoolExecutor(settings.n_parallel + 4, thread_name_prefix="llamacpp")
        self._flights = Flights(settings.n_parallel, settings.n_batch)
        self._counters = Counters(
            "active",
            "generated_tokens",
            "requests",
            "cancelled",
            # Prompt tokens sent to llama.cpp vs actually computed (the rest came from the
            # KV cache): how well caching works (bench/ reports it).
            "prompt_tokens_sent",
            "prompt_tokens_computed",
            # Times a request reading a long prompt stepped out for a waiting one.
            "yields",
        )

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        if len(text) <= INLINE_CHARS:
            return self._vocab.tokenize(text, pieces)
        return await asyncio.to_thread(self._vocab.tokenize, text, pieces)

    def special_token(self, marker: str) -> int | None:
        return self._vocab.special_token(marker)

    def bos_token(self) -> str | None:
        return self._vocab.bos_token()

    async def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]:
        """One llama.cpp completion in a worker thread, its chunks bridged to the event loop.

        Closing this iterator (client gone, stop string reached) sets ``cancel``; the callback
        then answers True and llama.cpp stops at its next token or prompt batch. The route's
        turn is held until the worker thread has returned: then llama.cpp has let go of the
        slot, and the editor's next request, which waits for that, lands where it is cached.
        """
        sampling.check(self.capabilities)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        flight = Flight(ids)
        self._flights.add(flight)
        route.turn.hold()
        request = llama_request(ids, sampling)
        running = loop.run_in_executor(self._pool, self._work, request, flight, loop, queue)
        running.add_done_callback(lambda _: self._landed(flight, route))
        self._counters.add(prompt_tokens_sent=len(ids))
        predicted, finished = 0, False
        try:
            while (chunk := await queue.get()) is not _END:
                if "error" in chunk or "choices" not in chunk:
                    error = chunk.get("error", chunk)
                    raise EngineError(f"llama.cpp: {error.get('message', error)}")
                timings = chunk.get("timings") or {}
                now = timings.get("predicted_n", predicted)
                self._counters.add(generated_tokens=now - predicted)
                predicted = now
                choice = chunk["choices"][0]
                finished = choice.get("finish_reason") is not None
                yield Chunk(choice.get("text") or "", predicted, choice.get("finish_reason"))
        finally:
            if not finished:
                route.turn.stop()
            flight.cancel.set()

    async def chat(self, body: dict[str, Any], route: Route) -> AsyncIterator[dict[str, Any]]:
        """One chat answer through llama.cpp's own chat handler (the GGUF's template, tools,
        response formats), its OpenAI chunks as they come; it steps out for keystrokes
        (chat_run.py)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        flight = Flight([], chat=True)
        self._flights.add(flight)
        route.turn.hold()
        request = {**body, "stream": True, "return_progress": True, "timings_per_token": True}
        running = loop.run_in_executor(self._pool, self._chat_work, request, flight, loop, queue)
        running.add_done_callback(lambda _: self._landed(flight, route))
        try:
            while (chunk := await queue.get()) is not _END:
                if "error" in chunk:
                    error = chunk["error"]
                    message = f"llama.cpp: {error.get('message', error)}"
                    raise (EngineRefused if error.get("code") == 400 else EngineError)(message)
                yield chunk
        finally:
            flight.cancel.set()

    def _chat_work(
        self, request: dict[str, Any], flight: Flight, loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
    ) -> None:  # fmt: skip
        run = ChatRun(request, flight, self._flights,
                      lambda chunk: loop.call_soon_threadsafe(queue.put_nowait, chunk),
                      self._typing)  # fmt: skip
        self._counters.add(active=1, requests=1)
        try:
            run.run(self._server.handle_chat_completions)
        except Exception as exc:  # surfaced to the caller as an EngineError
            loop.call_soon_threadsafe(queue.put_nowait, {"error": {"message": str(exc)}})
        finally:
            self._counters.add(active=-1, yields=run.pauses)
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, _END)

    def _landed(self, flight: Flight, route: Route) -> None:
        self._flights.leave(flight)
        route.turn.let_go()

    def _work(
        self, request: dict[str, Any], flight: Flight, loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Any],
    ) -> None:  # fmt: skip
        """The completion, in a worker thread; it steps out of its slot for waiting requests
        while it reads a long prompt (flights.py), and goes back in once they started."""
        made_way_for: list[Flight] = []  # the requests it stepped out for, when it did
        # Per submission (stepping out makes another): [cache found, prompt tokens computed].
        reads: list[list[int]] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:
            flight.started.set()
            read = reads[-1]
            read[1] = max(read[1], prompt_tokens_read(chunk))
            if progress := chunk.get("prompt_progress"):
                if read[0] < 0:
                    read[0] = progress["cache"]
                if waiting := self._flights.waiting_behind(flight, progress):
                    made_way_for[:] = waiting
                    return True
            if "prompt_progress" not in chunk or chunk.get("choices"):
                flight.answering.set()
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return flight.cancel.is_set()

        self._counters.add(active=1, requests=1)
        try:
            while True:
                made_way_for.clear()
                reads.append([-1, 0])
                self._server.handle_completions(request, on_chunk)
                if not made_way_for or flight.cancel.is_set():
                    break
                self._counters.add(yields=1)
                # Back in the queue once they started: llama.cpp puts it back in the slot that
                # holds what it read so far.
                Flights.wait_started(made_way_for)
                flight.started.clear()
        except Exception as exc:  # surfaced to the caller as an EngineError
            loop.call_soon_threadsafe(queue.put_nowait, {"error": {"message": str(exc)}})
        finally:
            computed = computed_over(reads)
            self._counters.add(active=-1, cancelled=int(flight.cancel.is_set()),
                               prompt_tokens_computed=computed)  # fmt: skip
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                loop.call_soon_threadsafe(queue.put_nowait, _END)

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    def upstreams(self) -> list[dict[str, object]]:
        return []  # the model is here

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None  # type: ignore[assignment]  # frees the model and its threads
        self._vocab.close()
