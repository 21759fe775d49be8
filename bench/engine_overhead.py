"""What the whole serving path (HTTP, key check, limits, usage ledger, SSE) adds to a keystroke's
completion over calling the same engine in-process: issue 4's "gateway overhead" figure.

    python bench/engine_overhead.py [MODEL] [--chars 60] [--threads 2]

One editor re-types a passage (bench/workloads.py) twice side by side: every keystroke goes
first to an engine built in this process (with `fimgate serve`'s defaults), then to a running
`fimgate serve` over HTTP, each with its own warm cache, so each pair sees the same prompt in
the same state. Prints time to first token and full completion (16 tokens) for both, and the
median of the per-keystroke differences as a share of the HTTP time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

import httpx
from peers import start
from rich.console import Console
from rich.table import Table
from workloads import Prompt, editors

from fimgate.engines.base import FimJob, TextDelta
from fimgate.engines.fim_engine import FimEngine, embedded_engine
from fimgate.modelpack import locate
from fimgate.settings import Settings

MAX_TOKENS = 16


async def timed(pieces: AsyncIterator[str]) -> tuple[float, float]:
    """Seconds to the first non-empty piece and to the end."""
    start_at, first = time.perf_counter(), None
    async for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - start_at
    total = time.perf_counter() - start_at
    return (first if first is not None else total), total


async def in_process(engine: FimEngine, prompt: Prompt) -> AsyncIterator[str]:
    job = FimJob(prompt.prefix, prompt.suffix, MAX_TOKENS, editor="bench")
    async for event in engine.generate(await engine.encode(job), job):
        if isinstance(event, TextDelta):
            yield event.text


async def run(engine: FimEngine, target, prompts: list[Prompt]) -> dict[str, list]:
    times: dict[str, list] = {"engine": [], "http": []}
    sides: dict[str, Callable[[Prompt], AsyncIterator[str]]] = {
        "engine": lambda p: in_process(engine, p),
    }
    async with httpx.AsyncClient(timeout=600) as client:
        sides["http"] = lambda p: target.stream(client, p.prefix, p.suffix, MAX_TOKENS)
        for i, prompt in enumerate(prompts):
            for side, stream in sides.items():
                result = await timed(stream(prompt))
                if i:  # the first prompt opens the file: both read it cold
                    times[side].append(result)
                await asyncio.sleep(0.2)  # let the other side's threads go idle
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="qwen2.5-coder-0.5b")
    parser.add_argument("--chars", type=int, default=60, help="characters typed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    settings = Settings.load(threads=args.threads)
    model = locate(args.model, settings.store.data_dir)
    prompts = editors(1, args.chars)[0]
    target = start("fimgate", model, args.threads, settings.engine.n_parallel, None)
    engine = embedded_engine(model, settings.engine)
    try:
        times = asyncio.run(run(engine, target, prompts))
    finally:
        target.stop()
    table = Table(title=f"{len(times['http'])} keystrokes, {model.name}, {args.threads} threads")
    for column in ("", "in-process p50 (s)", "HTTP p50 (s)", "added p50 (ms)", "share of HTTP"):
        table.add_column(column)
    for i, figure in enumerate(("first token", "full completion")):
        ours = [t[i] for t in times["engine"]]
        http = [t[i] for t in times["http"]]
        added = statistics.median(h - e for h, e in zip(http, ours, strict=True))
        http_p50 = statistics.median(http)
        table.add_row(
            figure, f"{statistics.median(ours):.3f}", f"{http_p50:.3f}",
            f"{added * 1000:.1f}", f"{added / http_p50:.1%}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
