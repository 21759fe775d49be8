"""What one tokenize call costs: in this process through ctypes (fimgate/engines/transports/
llama_vocab.py), called on the event loop (in-proc) or through ``asyncio.to_thread``
(thread), against the engine's private HTTP listener's ``/tokenize`` (what the in-process
engine asked before), for the text sizes an editor's prompt brings, with and without pieces.
Also the vocabulary's load time.

    python bench/tokenize_cost.py GGUF [--calls 200]

(the tests' 0.5B: .test-data/models/qwen2.5-coder-0.5b.gguf). Medians over ``--calls``
calls, all in the same run: wall time, and the CPU time the whole process spent (the HTTP
listener's threads included). Run it on an idle machine: other load moves both.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import xllamacpp
from rich.console import Console
from rich.table import Table

from fimgate.engines.transports.inprocess import llama_params
from fimgate.engines.transports.llama_vocab import LlamaVocab
from fimgate.engines.transports.llamacpp_api import LlamaCppApi
from fimgate.settings import EngineSettings

SOURCE = Path(inspect.getfile(argparse)).read_text()
SIZES = (200, 1500, 6000)  # chars: a typed tail, a short and a long editor prompt


async def medians_us(
    calls: dict[str, Callable[[], Awaitable[Any]]], rounds: int
) -> dict[str, tuple[float, float]]:
    """Median wall and process CPU time of each call, in µs. The calls take turns, round
    after round, so whatever else the machine does weighs on each alike."""
    for call in calls.values():
        await call()  # warm: the HTTP client's connection, the thread pool's thread
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            await call()
            samples[name].append((time.perf_counter() - start, time.process_time() - start_cpu))
    return {
        name: (statistics.median(w for w, _ in s) * 1e6, statistics.median(c for _, c in s) * 1e6)
        for name, s in samples.items()
    }


async def measure(vocab: LlamaVocab, api: LlamaCppApi, rounds: int) -> Table:
    table = Table(title=f"tokenize, median of {rounds} calls (µs)")
    columns = ("in-proc", "thread", "HTTP", "CPU in-proc", "CPU HTTP")
    for column in ("chars", "pieces", "tokens", *columns):
        table.add_column(column, justify="right")
    for size in SIZES:
        text = SOURCE[10000 : 10000 + size]
        for pieces in (False, True):

            async def direct(text: str = text, pieces: bool = pieces) -> list[Any]:
                return vocab.tokenize(text, pieces)

            async def threaded(text: str = text, pieces: bool = pieces) -> list[Any]:
                return await asyncio.to_thread(vocab.tokenize, text, pieces)

            async def http(text: str = text, pieces: bool = pieces) -> list[Any]:
                return await api.tokenize(text, pieces)

            assert await direct() == await http()
            got = await medians_us({"in": direct, "thread": threaded, "http": http}, rounds)
            table.add_row(
                str(size), "yes" if pieces else "no", str(len(await direct())),
                *(f"{us:.0f}" for us in (got["in"][0], got["thread"][0], got["http"][0],
                                         got["in"][1], got["http"][1])),
            )  # fmt: skip
    await api.aclose()
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    path = args.model
    server = xllamacpp.Server(llama_params(path, EngineSettings(n_ctx=1024, n_parallel=1)))
    url = server.listening_address
    api = LlamaCppApi(url if url.startswith("http") else f"http://{url}")
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        vocab = LlamaVocab(path)
        loads.append(time.perf_counter() - start)
        vocab.close()
    vocab = LlamaVocab(path)
    console = Console()
    console.print(f"{path.name}: vocabulary loaded in {min(loads) * 1000:.0f} ms (best of 3)")
    console.print(asyncio.run(measure(vocab, api, args.calls)))
    vocab.close()


if __name__ == "__main__":
    main()
