"""What the router adds to a request: one upstream llama.cpp server (``fimgate engine-server``,
the 0.5B), the same cached prompt sent for one token straight through its transport and
through a router over 1 and 3 upstreams (the other two real servers as well), alternating,
and the ranking alone (``_pick``) timed in a loop.

    python bench/router_overhead.py [--requests 200] [--model qwen2.5-coder-0.5b]

Prints p50/p95 of each and the difference of medians: the routing overhead per request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fimgate.engines.router import Router
from fimgate.engines.transports.base import Route, Sampling
from fimgate.engines.transports.llamacpp_server import LlamaCppServer
from fimgate.engines.upstreams import UpstreamSpec, upstream
from fimgate.local_process import free_port, stop, wait_until_up

PROMPT = "import math\n\n\ndef circle_area(radius: float) -> float:\n    return "


def start(model: str, folder: Path, n: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    fimgate = Path(sys.executable).parent / "fimgate"
    log = folder / f"engine-{n}.log"
    command = [str(fimgate), "engine-server", "--model", model, "--port", str(port),
               "--threads", "1", "--parallel", "2", "--n-ctx", "2048"]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health", log, 300)
    return process, url


async def one(transport: LlamaCppServer | Router, ids: list[int]) -> float:
    start_at = time.perf_counter()
    async for _ in transport.run(ids, Sampling(n_predict=1), Route("bench\nfile")):
        pass
    return time.perf_counter() - start_at


async def measure(urls: list[str], requests: int) -> dict[str, list[float]]:
    direct = LlamaCppServer(urls[0])
    routers = {
        "router, 1 upstream": Router([upstream(UpstreamSpec(url=urls[0]))]),
        "router, 3 upstreams": Router([upstream(UpstreamSpec(url=u)) for u in urls]),
    }
    ids = await direct.tokenize(PROMPT)
    sides: dict[str, LlamaCppServer | Router] = {"direct": direct, **routers}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for side in sides.values():  # warm: the prompt cached where affinity sends it
        await one(side, ids)
    for _ in range(requests):
        for name, side in sides.items():
            times[name].append(await one(side, ids))
    router = routers["router, 3 upstreams"]
    picks = 20000
    start_at = time.perf_counter()
    for i in range(picks):
        router._pick(f"key\nfile {i}", set())
    times["_pick alone (3 upstreams)"] = [(time.perf_counter() - start_at) / picks]
    for side in sides.values():
        await side.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fimgate-router-"))
    servers = [start(args.model, folder, n) for n in range(3)]
    try:
        times = asyncio.run(measure([url for _, url in servers], args.requests))
    finally:
        for process, _ in servers:
            stop(process)
    base = statistics.median(times["direct"])
    print(f"{args.requests} requests each, one token from a cached prompt, alternating")
    for name, values in times.items():
        if name.startswith("_pick"):
            print(f"  {name:28s} mean {values[0] * 1e6:.1f} us per ranking")
            continue
        p50 = statistics.median(values)
        p95 = sorted(values)[int(0.95 * (len(values) - 1))]
        extra = f"  (+{(p50 - base) * 1e3:.2f} ms)" if name.startswith("router") else ""
        print(f"  {name:28s} p50 {p50 * 1e3:8.3f} ms  p95 {p95 * 1e3:8.3f} ms{extra}")


if __name__ == "__main__":
    main()
