"""Serving benchmark: fimgate beside llama.cpp's own server and llama-cpp-python's, in one
run, same GGUF, same threads, one server at a time on an otherwise idle machine.

    python bench/serving.py MODEL.gguf [--peers llama.cpp,llama-cpp-python]
        [--llama-cpp-python /path/to/python] [--threads 2] [--chars 60] [--quick]

Workloads (bench/workloads.py, real standard-library files):
- replay-1, replay-4: 1 or 4 editors re-typing a passage of their own file, a request at
  every pause (1 to 4 characters). Each editor waits for the first token, then types on
  0.2 s later, cancelling the request if it is still generating (as Continue does).
- cold-1, cold-4: unrelated ~1,000-token prompts, one at a time and all at once.
- steady-4: 4 clients sending keystroke prompts back to back, full completions, for a fixed
  time.
Prints a table per workload and writes bench/serving.json. Ratios between servers in one
run are the result; absolute times vary ±30% between runs on these machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from peers import Target, start
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from workloads import Prompt, cold, editors

GAP = 0.2  # seconds between a suggestion's first token and the next keystroke
MAX_TOKENS = 16


@dataclass
class Sample:
    ttft: float | None  # to the first non-empty piece (the end, for an empty completion)
    total: float | None  # None: cancelled before the end, or failed
    pieces: int
    failed: bool = False  # the server cut the request off or answered with an error


@dataclass
class Result:
    server: str
    workload: str
    wall: float
    cpu: float
    samples: list[Sample] = field(default_factory=list)
    prompt_sent: int | None = None
    prompt_computed: int | None = None

    def summary(self) -> dict[str, float | int | str | None]:
        ttft = [s.ttft for s in self.samples if s.ttft is not None]
        full = [s.total for s in self.samples if s.total is not None]
        pieces = sum(s.pieces for s in self.samples)
        return {
            "server": self.server,
            "requests": len(self.samples),
            "failed": sum(s.failed for s in self.samples),
            "ttft_p50": _q(ttft, 50),
            "ttft_p95": _q(ttft, 95),
            "full_p50": _q(full, 50),
            "full_p95": _q(full, 95),
            "completions_per_s": len(self.samples) / self.wall,
            "tokens_per_s": pieces / self.wall,
            "cpu_s": self.cpu,
            "prompt_computed_of_sent": (
                f"{self.prompt_computed}/{self.prompt_sent}" if self.prompt_sent else None
            ),
        }


def _q(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


async def one(
    target: Target, client: httpx.AsyncClient, prompt: Prompt, gap: float | None
) -> Sample:
    """One request. ``gap``: cancel it that long after its first token (None: let it end)."""
    try:
        return await _one(target, client, prompt, gap)
    except httpx.HTTPError:
        return Sample(None, None, 0, failed=True)


async def _one(
    target: Target, client: httpx.AsyncClient, prompt: Prompt, gap: float | None
) -> Sample:
    start_at = time.perf_counter()
    pieces, first = 0, None
    stream = target.stream(client, prompt.prefix, prompt.suffix, MAX_TOKENS)
    try:
        async for piece in stream:
            if piece:
                pieces += 1
                if first is None:
                    first = time.perf_counter() - start_at
                    if gap is not None:
                        break
        else:
            total = time.perf_counter() - start_at
            return Sample(first if first is not None else total, total, pieces)
        try:  # the typist reads for `gap`, then types on: cancel if still generating
            async with asyncio.timeout(gap):
                async for piece in stream:
                    pieces += bool(piece)
            return Sample(first, time.perf_counter() - start_at, pieces)
        except TimeoutError:
            return Sample(first, None, pieces)
    finally:
        await stream.aclose()


async def replay(target: Target, sessions: list[list[Prompt]], tick) -> list[Sample]:
    async def editor(prompts: list[Prompt]) -> list[Sample]:
        async with httpx.AsyncClient(timeout=600) as client:
            samples = []
            for prompt in prompts:
                samples.append(await one(target, client, prompt, GAP))
                tick()
            return samples

    per_editor = await asyncio.gather(*(editor(p) for p in sessions))
    return [s for samples in per_editor for s in samples]


async def cold_run(target: Target, prompts: list[Prompt], together: bool, tick) -> list[Sample]:
    async with httpx.AsyncClient(timeout=600) as client:

        async def run(prompt: Prompt) -> Sample:
            sample = await one(target, client, prompt, None)
            tick()
            return sample

        if together:
            return list(await asyncio.gather(*(run(p) for p in prompts)))
        return [await run(p) for p in prompts]


async def steady(target: Target, sessions: list[list[Prompt]], seconds: float, tick):
    deadline = time.perf_counter() + seconds

    async def client_loop(prompts: list[Prompt]) -> list[Sample]:
        samples, i = [], 0
        async with httpx.AsyncClient(timeout=600) as client:
            while time.perf_counter() < deadline:
                samples.append(await one(target, client, prompts[i % len(prompts)], None))
                i += 1
                tick()
        return samples

    per_client = await asyncio.gather(*(client_loop(p) for p in sessions))
    return [s for samples in per_client for s in samples]


def _prompt_counters(target: Target) -> tuple[int, int] | None:
    """(sent, computed) prompt tokens so far, where the server reports them."""
    try:
        if target.name == "fimgate":
            stats = httpx.get(f"{target.url}/health").json()["models"]
            model = next(iter(stats.values()))
            return model["prompt_tokens_sent"], model["prompt_tokens_computed"]
        if target.name == "llama.cpp":
            metrics = httpx.get(f"{target.url}/metrics").text
            for line in metrics.splitlines():
                if line.startswith("llamacpp:prompt_tokens_total"):
                    return -1, int(float(line.split()[-1]))
    except (httpx.HTTPError, KeyError, StopIteration):
        pass
    return None


def measure(target: Target, workload: str, run, progress: Progress, total: int) -> Result:
    task = progress.add_task(f"{target.name}: {workload}", total=total)
    before, cpu0, t0 = _prompt_counters(target), target.cpu_seconds(), time.perf_counter()
    samples = asyncio.run(run(lambda: progress.advance(task)))
    result = Result(target.name, workload, time.perf_counter() - t0, target.cpu_seconds() - cpu0)
    result.samples = samples
    after = _prompt_counters(target)
    if before and after:
        result.prompt_computed = after[1] - before[1]
        result.prompt_sent = after[0] - before[0] if after[0] >= 0 else None
    progress.update(task, completed=total)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--peers", default="llama.cpp,llama-cpp-python")
    parser.add_argument("--llama-cpp-python", help="a Python with llama-cpp-python[server]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chars", type=int, default=40, help="characters each editor types")
    parser.add_argument("--cold", type=int, default=2, help="cold prompts")
    parser.add_argument("--steady-seconds", type=float, default=20)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", type=Path, default=Path("bench/serving.json"))
    args = parser.parse_args()
    if args.quick:
        args.chars, args.cold, args.steady_seconds = 12, 1, 5
    servers = ["fimgate", *[p for p in args.peers.split(",") if p]]
    if "llama-cpp-python" in servers and not args.llama_cpp_python:
        servers.remove("llama-cpp-python")
    one_editor, four_editors = editors(1, args.chars), editors(4, args.chars)
    cold_prompts = cold(args.cold)
    workloads = {
        "replay-1": (lambda t: lambda tick: replay(t, one_editor, tick), len(one_editor[0])),
        "replay-4": (
            lambda t: lambda tick: replay(t, four_editors, tick),
            sum(len(p) for p in four_editors),
        ),
        "cold-1": (lambda t: lambda tick: cold_run(t, cold_prompts, False, tick), args.cold),
        "cold-4": (lambda t: lambda tick: cold_run(t, cold_prompts, True, tick), args.cold),
        "steady-4": (
            lambda t: lambda tick: steady(t, four_editors, args.steady_seconds, tick),
            None,
        ),
    }
    results: list[Result] = []
    console = Console()
    with Progress(console=console) as progress:
        for name in servers:
            # llama-cpp-python serves one sequence at a time whatever --parallel says.
            target = start(name, args.model, args.threads, 4, args.llama_cpp_python)
            try:
                for workload, (make, total) in workloads.items():
                    results.append(measure(target, workload, make(target), progress, total or 0))
            finally:
                target.stop()
    report(results, console)
    args.json.write_text(
        json.dumps(
            {
                "model": str(args.model),
                "threads": args.threads,
                "results": [{**asdict(r), "summary": r.summary()} for r in results],
            },
            indent=1,
        )
    )


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report(results: list[Result], console: Console) -> None:
    for workload in dict.fromkeys(r.workload for r in results):
        table = Table(title=workload)
        columns = ("server", "requests", "failed", "ttft_p50", "ttft_p95", "full_p50", "full_p95",
                   "completions_per_s", "tokens_per_s", "cpu_s", "prompt_computed_of_sent")
        for column in columns:
            table.add_column(column.replace("_", " "))
        for r in results:
            if r.workload == workload:
                s = r.summary()
                table.add_row(*(_fmt(s[c]) for c in columns))
        console.print(table)


if __name__ == "__main__":
    main()
