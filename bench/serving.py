"""Serving benchmark: fimgate beside llama.cpp's own server and llama-cpp-python's, in one
run, same GGUF, same threads, one server at a time on an otherwise idle machine.

    python bench/serving.py [MODEL] [--llama-cpp-python PYTHON] [--quick]
        [--workloads replay-1,replay-4,cold-1,cold-4,steady-4] [--markdown bench/RESULTS.md]
        [--peers llama.cpp,fimgate-upstreams-1,fimgate-upstreams-2,fimgate-upstreams-3]

``fimgate-upstreams-N`` (bench/peers.py) is the gateway in front of N upstream llama.cpp
servers: compared with ``fimgate`` (in-process) and ``llama.cpp`` alone, it shows what the
hop and the routing cost, and how much of each prompt the upstreams' caches held.

MODEL is a packaged model name (default qwen2.5-coder-0.5b) or a GGUF path. Workloads
(bench/workloads.py, real standard-library files):
- replay-1, replay-4: 1 or 4 editors, each opens its own file (one unmeasured request), then
  re-types a passage of it, a request at every pause (1 to 4 characters). Each editor reads
  the suggestion's first token, types on 0.2 s later and cancels the request if it is still
  running, as Continue does.
- cold-1, cold-4: unrelated ~1,000-token prompts, one at a time, then 4 at once.
- steady-4: 4 clients sending keystroke prompts back to back, full completions, for a fixed
  time.
- replay-N+chat-M: replay-N while M chat streams run beside it (Continue's chat role: each a
  ~250-token answer about a ~300-token question, one after the other until the replay ends),
  started and writing before the replay's clock starts. Beside replay-N alone, it shows what
  chat costs the person typing. The chats' tokens per second are printed apart.
Prints a table per workload and the ratios to the best peer, writes bench/serving.json after
every workload (a run cut short keeps what it measured). Ratios between servers in one run
are the result; absolute times vary ±30% between runs on these machines.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from peers import Target, start
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from workloads import Prompt, cold, editors

from fimgate.modelpack import locate
from fimgate.settings import StoreSettings

GAP = 0.2  # seconds between a suggestion's first token and the next keystroke
MAX_TOKENS = 16
WORKLOADS = ("replay-1", "replay-4", "cold-1", "cold-4", "steady-4")
DRAIN = 3.0  # seconds to watch the server's CPU after a workload


@dataclass
class Sample:
    ttft: float | None  # to the first non-empty piece (the end, for an empty completion)
    total: float | None  # None: cancelled before the end, or failed
    pieces: int
    failed: bool = False  # the server cut the request off or answered with an error
    tokens: int | None = None  # completion tokens, where the server reports them at the end

    @property
    def delivered(self) -> int:
        """Tokens delivered: as reported, else one a piece (a piece may hold several)."""
        return self.tokens or self.pieces


@dataclass
class Result:
    server: str
    workload: str
    wall: float = 0.0
    cpu: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    # Server-side counters over the measured part, where the server reports them.
    prompt_sent: int | None = None
    prompt_computed: int | None = None
    generated: int | None = None
    chat_pieces: int | None = None  # chat chunks written during a +chat workload
    went_on: int | None = None  # answered from a suggestion typed along (fimgate)
    drain_cpu: float = 0.0  # CPU the server burnt after the last client got its answer

    def summary(self) -> dict[str, float | int | str | None]:
        ttft = [s.ttft for s in self.samples if s.ttft is not None]
        full = [s.total for s in self.samples if s.total is not None]
        delivered = sum(s.delivered for s in self.samples)
        decode = [
            (s.delivered - 1) / (s.total - s.ttft)
            for s in self.samples
            if s.total is not None and s.ttft is not None and s.delivered >= 4 and s.total > s.ttft
        ]
        return {
            "server": self.server,
            "requests": len(self.samples),
            "failed": sum(s.failed for s in self.samples),
            "ttft_p50": _q(ttft, 50),
            "ttft_p95": _q(ttft, 95),
            "full_p50": _q(full, 50),
            "full_p95": _q(full, 95),
            "completions_per_s": len(self.samples) / self.wall if self.wall else None,
            "tokens_per_s": delivered / self.wall if self.wall else None,
            "decode_tokens_per_s": _q(decode, 50),
            "cpu_s": self.cpu,
            "prompt_computed": self.prompt_computed,
            "prompt_sent": self.prompt_sent,
            "from_suggestion": self.went_on,
            # Generated but never delivered: work done for clients that had left.
            "undelivered_tokens": (
                max(0, self.generated - delivered) if self.generated is not None else None
            ),
            "drain_cpu_s": self.drain_cpu,
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
    pieces, first, tokens = 0, None, None
    stream = target.stream(client, prompt.prefix, prompt.suffix, MAX_TOKENS)
    try:
        async for piece in stream:
            if isinstance(piece, int):
                tokens = piece
            elif piece:
                pieces += 1
                if first is None:
                    first = time.perf_counter() - start_at
                    if gap is not None:
                        break
        else:
            total = time.perf_counter() - start_at
            return Sample(first if first is not None else total, total, pieces, tokens=tokens)
        try:  # the typist reads for `gap`, then types on: cancel if still generating
            async with asyncio.timeout(gap):
                async for piece in stream:
                    if isinstance(piece, int):
                        tokens = piece
                    else:
                        pieces += bool(piece)
            return Sample(first, time.perf_counter() - start_at, pieces, tokens=tokens)
        except TimeoutError:
            return Sample(first, None, pieces)
    finally:
        await stream.aclose()


async def replay(target: Target, sessions: list[list[Prompt]], tick, mark) -> list[Sample]:
    """Each editor opens its file (one unmeasured request: every server reads it cold), then
    all type at once; ``mark`` starts the clock when the last editor is ready."""
    ready = asyncio.Barrier(len(sessions))

    async def editor(prompts: list[Prompt]) -> list[Sample]:
        async with httpx.AsyncClient(timeout=600) as client:
            await one(target, client, prompts[0], None)
            if await ready.wait() == 0:
                mark()
            samples = []
            for prompt in prompts[1:]:
                samples.append(await one(target, client, prompt, GAP))
                tick()
            return samples

    per_editor = await asyncio.gather(*(editor(p) for p in sessions))
    return [s for samples in per_editor for s in samples]


CHAT_QUESTION = (
    "Explain step by step what this Python code does, and suggest two improvements:\n\n"
    + (Path(__file__).resolve().parent.parent / "fimgate/engines/stops.py").read_text()[:1200]
)


async def chat_beside(
    target: Target, chats: int, run: Callable[[], Awaitable[list[Sample]]], counted: list[int]
) -> list[Sample]:
    """``run`` while ``chats`` chat streams write answers, each one after the other; they
    write (first chunk in) before ``run`` starts. ``counted``: chat chunks during ``run``."""
    body = {"model": "codestral-latest", "messages": [{"role": "user", "content": CHAT_QUESTION}],
            "max_tokens": 256, "temperature": 0, "stream": True}  # fmt: skip
    writing = [asyncio.Event() for _ in range(chats)]
    measuring = asyncio.Event()

    async def chatter(started: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=600, headers=target.headers) as client:
            while True:
                path = target.url + "/v1/chat/completions"
                async with client.stream("POST", path, json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            started.set()
                            counted[0] += measuring.is_set()

    tasks = [asyncio.create_task(chatter(event)) for event in writing]
    try:
        await asyncio.gather(*(event.wait() for event in writing))
        measuring.set()
        return await run()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def cold_run(
    target: Target, prompts: list[Prompt], together: bool, tick, mark
) -> list[Sample]:
    mark()
    async with httpx.AsyncClient(timeout=600) as client:

        async def run(prompt: Prompt) -> Sample:
            sample = await one(target, client, prompt, None)
            tick()
            return sample

        if together:
            return list(await asyncio.gather(*(run(p) for p in prompts)))
        return [await run(p) for p in prompts]


async def steady(target: Target, sessions: list[list[Prompt]], seconds: float, tick, mark):
    mark()
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


def _counters(target: Target) -> dict[str, int]:
    """Prompt tokens sent and computed, and tokens generated, where the server reports them:
    fimgate in /health, llama.cpp in /metrics; llama-cpp-python reports none."""
    try:
        if target.name.startswith("fimgate"):
            stats = httpx.get(f"{target.url}/health").json()["models"]
            model = next(iter(stats.values()))
            return {
                "prompt_sent": model["prompt_tokens_sent"],
                "prompt_computed": model["prompt_tokens_computed"],
                "generated": model["generated_tokens"],
                "went_on": model.get("went_on", 0),
            }
        if target.name == "llama.cpp":
            found = {}
            names = {
                "llamacpp:prompt_tokens_total": "prompt_computed",
                "llamacpp:tokens_predicted_total": "generated",
            }
            for line in httpx.get(f"{target.url}/metrics").text.splitlines():
                name = line.split(" ")[0]
                if name in names:
                    found[names[name]] = int(float(line.split()[-1]))
            return found
    except (httpx.HTTPError, KeyError, StopIteration):
        pass
    return {}


def measure(target: Target, workload: str, run, progress: Progress, total: int) -> Result:
    """Run one workload; the clock, CPU and counters start when the workload calls mark()."""
    task = progress.add_task(f"{target.name}: {workload}", total=total)
    result = Result(target.name, workload)
    start: dict[str, float] = {}
    before: dict[str, int] = {}

    def mark() -> None:
        before.update(_counters(target))
        start.update(cpu=target.cpu_seconds(), t=time.perf_counter())

    counted = [0]
    if "+chat-" in workload:
        result.samples = asyncio.run(run(lambda: progress.advance(task), mark, counted))
        result.chat_pieces = counted[0]
    else:
        result.samples = asyncio.run(run(lambda: progress.advance(task), mark))
    result.wall = time.perf_counter() - start["t"]
    cpu_end = target.cpu_seconds()
    result.cpu = cpu_end - start["cpu"]
    time.sleep(DRAIN)  # work still running for clients that left shows up here
    result.drain_cpu = target.cpu_seconds() - cpu_end
    after = _counters(target)
    for key in ("prompt_sent", "prompt_computed", "generated", "went_on"):
        if key in before and key in after:
            setattr(result, key, after[key] - before[key])
    progress.update(task, completed=total)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "model", nargs="?", default="qwen2.5-coder-0.5b",
        help="packaged model name or GGUF path (default: the packaged 0.5B)",
    )  # fmt: skip
    parser.add_argument("--peers", default="llama.cpp,llama-cpp-python")
    parser.add_argument("--llama-cpp-python", help="a Python with llama-cpp-python[server]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chars", type=int, default=24, help="characters each editor types")
    parser.add_argument("--cold", type=int, default=2, help="cold prompts run one at a time")
    parser.add_argument("--steady-seconds", type=float, default=15)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="which to run")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="run the workloads this many times over, in turn (a +chat table pools them)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=Path("bench/serving.json"))
    parser.add_argument("--markdown", type=Path, help="also write the tables here (RESULTS.md)")
    args = parser.parse_args()
    if args.quick:
        args.chars, args.cold, args.steady_seconds = 10, 1, 5
    model = locate(args.model, StoreSettings().data_dir)
    servers = ["fimgate", *[p for p in args.peers.split(",") if p]]
    if "llama-cpp-python" in servers and not args.llama_cpp_python:
        print("llama-cpp-python skipped: pass --llama-cpp-python PYTHON to include it")
        servers.remove("llama-cpp-python")
    one_editor, four_editors = editors(1, args.chars), editors(4, args.chars)
    cold_one, cold_four = cold(args.cold), cold(4)
    typed = sum(len(p) - 1 for p in four_editors)  # the first prompt of each only warms up
    plans = {
        "replay-1": (lambda t, *a: replay(t, one_editor, *a), len(one_editor[0]) - 1),
        "replay-4": (lambda t, *a: replay(t, four_editors, *a), typed),
        "cold-1": (lambda t, *a: cold_run(t, cold_one, False, *a), len(cold_one)),
        "cold-4": (lambda t, *a: cold_run(t, cold_four, True, *a), len(cold_four)),
        "steady-4": (lambda t, *a: steady(t, four_editors, args.steady_seconds, *a), 0),
    }  # fmt: skip
    chosen = [w for w in args.workloads.split(",") if w] * args.repeat
    for workload in chosen:
        base, _, chats = workload.partition("+chat-")
        if chats:
            plans[workload] = (_with_chat(plans[base][0], int(chats)), plans[base][1])
    results: list[Result] = []
    console = Console(width=max(Console().width, 180))  # the tables are wide
    with Progress(console=console) as progress:
        for name in servers:
            # llama-cpp-python serves one sequence at a time whatever --parallel says.
            target = start(name, model, args.threads, 4, args.llama_cpp_python)
            try:
                for workload in chosen:
                    plan, total = plans[workload]
                    run = functools.partial(plan, target)
                    results.append(measure(target, workload, run, progress, total))
                    save(args, model, results)  # a run cut short keeps what it measured
            finally:
                target.stop()
    report(results, console)
    console.print(targets_table(results))
    if any("+chat-" in r.workload for r in results):
        console.print(chat_table(results))
    if args.markdown:
        args.markdown.write_text(markdown(args, model, results))
        console.print(f"wrote {args.markdown}")


def _with_chat(plan: Callable[..., Awaitable[list[Sample]]], chats: int):
    """``plan`` with ``chats`` chat streams beside it (``chat_beside``)."""

    def with_chat(target: Target, tick, mark, counted: list[int]):
        return chat_beside(target, chats, lambda: plan(target, tick, mark), counted)

    with_chat.chats = chats  # type: ignore[attr-defined]
    return with_chat


def chat_table(results: list[Result]) -> Table:
    """Each replay with chat streams beside the same replay alone, first-token times pooled
    over the repeats (one run of ~35 requests is too noisy for a ratio of two medians)."""
    pooled: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        pooled.setdefault((result.server, result.workload), []).append(result)

    def ttfts(runs: list[Result]) -> list[float]:
        return [s.ttft for r in runs for s in r.samples if s.ttft is not None]

    table = Table(title="keystrokes beside chat: first token, pooled over the repeats")
    for column in ("server", "workload", "runs", "requests", "ttft p50", "ttft p95",
                   "alone p50", "alone p95", "p50 ratio (≤1.5)", "p95 ratio (≤2)",
                   "chat chunks/s"):  # fmt: skip
        table.add_column(column)
    for (server, workload), runs in pooled.items():
        base = pooled.get((server, workload.partition("+chat-")[0]))
        if "+chat-" not in workload or not base:
            continue
        with_chat, alone = ttfts(runs), ttfts(base)
        p50, p95, a50, a95 = (_q(with_chat, 50), _q(with_chat, 95), _q(alone, 50),
                              _q(alone, 95))  # fmt: skip
        pieces = sum(r.chat_pieces or 0 for r in runs) / sum(r.wall for r in runs)
        table.add_row(
            server, workload, str(len(runs)), str(len(with_chat)), _fmt(p50, 3), _fmt(p95, 3),
            _fmt(a50, 3), _fmt(a95, 3), _fmt(p50 / a50, 2), _fmt(p95 / a95, 2), _fmt(pieces, 1),
        )  # fmt: skip
    return table


def save(args: argparse.Namespace, model: Path, results: list[Result]) -> None:
    args.json.write_text(
        json.dumps(
            {
                "model": model.name,
                "threads": args.threads,
                "chars": args.chars,
                "results": [{**asdict(r), "summary": r.summary()} for r in results],
            },
            indent=1,
        )
    )


def targets_table(results: list[Result]) -> Table:
    """fimgate against the best peer on each keystroke-replay figure (issue 4's targets)."""
    rows = [
        ("replay-1", "ttft_p50", min, "<= 0.5x"),
        ("replay-1", "ttft_p95", min, "<= 0.7x"),
        ("replay-4", "ttft_p50", min, "<= 0.5x"),
        ("replay-4", "ttft_p95", min, "<= 0.7x"),
        ("replay-4", "completions_per_s", max, ">= 1.5x"),
        ("cold-1", "decode_tokens_per_s", max, ">= 0.9x"),
    ]
    summaries = {(r.server, r.workload): r.summary() for r in results}
    table = Table(title="fimgate / best peer")
    for column in ("workload", "figure", "fimgate", "best peer", "ratio", "target"):
        table.add_column(column)
    for workload, figure, best, goal in rows:
        ours = summaries.get(("fimgate", workload), {}).get(figure)
        peers = [
            (s[figure], server)
            for (server, w), s in summaries.items()
            if w == workload and not server.startswith("fimgate") and s.get(figure) is not None
        ]
        if ours is None or not peers:
            continue
        value, server = best(peers)
        ratio = ours / value if value else None
        table.add_row(workload, figure, _fmt(ours), f"{_fmt(value)} ({server})", _fmt(ratio), goal)
    return table


def markdown(args: argparse.Namespace, model: Path, results: list[Result]) -> str:
    """The run's tables as Markdown, with what it ran on."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "?",
    )  # fmt: skip
    lines = [
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}`",
        f"- machine: {os.cpu_count()} vCPUs ({cpu}), threads {args.threads}",
        f"- model: `{model.name}`; {args.chars} characters typed per editor, "
        f"{MAX_TOKENS} max tokens, cancelled {GAP} s after the first token",
        f"- command: `python bench/serving.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    for table in [*tables(results), targets_table(results)]:
        lines += [f"### {table.title}", "", _md(table), ""]
    return "\n".join(lines)


def _md(table: Table) -> str:
    header = [str(c.header) for c in table.columns]
    rows = list(zip(*(list(c.cells) for c in table.columns), strict=True))
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(out)


def _fmt(value: object, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


COLUMNS = (
    "server", "requests", "failed", "ttft_p50", "ttft_p95", "full_p50", "full_p95",
    "completions_per_s", "tokens_per_s", "decode_tokens_per_s", "cpu_s", "prompt_computed",
    "prompt_sent", "from_suggestion", "undelivered_tokens", "drain_cpu_s",
)  # fmt: skip


def report(results: list[Result], console: Console) -> None:
    for table in tables(results):
        console.print(table)


def tables(results: list[Result]) -> list[Table]:
    out = []
    for workload in dict.fromkeys(r.workload for r in results):
        table = Table(title=workload)
        for column in COLUMNS:
            table.add_column(column.replace("_", " "))
        for r in results:
            if r.workload == workload:
                s = r.summary()
                table.add_row(*(_fmt(s[c]) for c in COLUMNS))
        out.append(table)
    return out


if __name__ == "__main__":
    main()
