"""The embedded transport: llama.cpp's own server engine, in-process, through xllamacpp.

Why this binding: it runs llama.cpp's server loop (slots, continuous batching, prompt cache)
in-process with the GIL released, installs as a prebuilt wheel in seconds, and decodes as
fast as llama-cpp-python's build here (see docs/engine.md). Its Python surface is narrow:

- ``Server.handle_completions(request, callback)`` blocks until done, so it runs in a worker
  thread and streams through the callback; the callback returning True stops generation at
  the next token (or the next prompt batch, with ``return_progress``). Every request goes this
  way, streaming or not, so every request can be cancelled.
- There is no in-process tokenizer, but the engine's private HTTP listener (loopback, random
  port, a random key so nothing else on the machine can use it) has ``/tokenize`` with
  ``parse_special: false``: user text is tokenized as plain text and only the FIM markers
  become special tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xllamacpp

from fimgate.engines.base import EngineError
from fimgate.engines.counters import Counters
from fimgate.engines.flights import Flight, Flights, computed_over
from fimgate.engines.settings import EngineSettings
from fimgate.engines.transports.base import Capabilities, Chunk, Sampling
from fimgate.engines.transports.llamacpp_api import (
    LlamaCppApi,
    LlamaCppTokenizer,
    llama_request,
    prompt_tokens_read,
)

_END = object()


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


class InProcessLlamaCpp(LlamaCppTokenizer):
    capabilities = Capabilities(grammar=True, progress=True)

    def __init__(self, model_path: Path, settings: EngineSettings) -> None:
        params = llama_params(model_path, settings)
        key = secrets.token_urlsafe(32)
        params.api_keys = [key]
        self._server = xllamacpp.Server(params)
        address = self._server.listening_address
        if not address.startswith("http"):
            address = f"http://{address}"
        self._api = LlamaCppApi(address, {"Authorization": f"Bearer {key}"})
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

    async def run(self, ids: list[int], sampling: Sampling) -> AsyncIterator[Chunk]:
        """One llama.cpp completion in a worker thread, its chunks bridged to the event loop.

        Closing this iterator (client gone, stop string reached) sets ``cancel``; the callback
        then answers True and llama.cpp stops at its next token or prompt batch.
        """
        request = llama_request(ids, sampling)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        flight = Flight(ids)
        made_way_for: list[Flight] = []  # the requests it stepped out for, when it did
        # Per submission (stepping out makes another): [cache found, prompt tokens computed].
        reads: list[list[int]] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:  # worker thread
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
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return flight.cancel.is_set()

        def work() -> None:  # worker thread
            self._counters.add(active=1, requests=1)
            try:
                while True:
                    made_way_for.clear()
                    reads.append([-1, 0])
                    self._server.handle_completions(request, on_chunk)
                    if not made_way_for or flight.cancel.is_set():
                        break
                    self._counters.add(yields=1)
                    # Back in the queue once they started: llama.cpp puts it back in the
                    # slot that holds what it read so far.
                    Flights.wait_started(made_way_for)
                    flight.started.clear()
            except Exception as exc:  # surfaced to the caller as an EngineError
                loop.call_soon_threadsafe(queue.put_nowait, {"error": {"message": str(exc)}})
            finally:
                self._counters.add(
                    active=-1,
                    cancelled=int(flight.cancel.is_set()),
                    prompt_tokens_computed=computed_over(reads),
                )
                with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                    loop.call_soon_threadsafe(queue.put_nowait, _END)

        await self._flights.enter(flight)
        running = loop.run_in_executor(self._pool, work)
        running.add_done_callback(lambda _: self._flights.leave(flight))
        self._counters.add(prompt_tokens_sent=len(ids))
        predicted = 0
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
                yield Chunk(choice.get("text") or "", predicted, choice.get("finish_reason"))
        finally:
            flight.cancel.set()

    def complete_raw(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request as llama.cpp takes it, blocking; its last chunk (bench tools read
        log-probabilities from it)."""
        chunks: list[dict[str, Any]] = []
        self._server.handle_completions(request, lambda chunk: chunks.append(chunk) or False)
        return chunks[-1]

    def stats(self) -> dict[str, int]:
        return self._counters.snapshot()

    async def aclose(self) -> None:
        await self._api.aclose()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None  # type: ignore[assignment]  # frees the model and its threads
