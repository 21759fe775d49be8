"""What the gateway adds to each request: key check, limit lookup, rate-limit admission and
settling, the ledger row. Prints a table (microseconds per request) and writes JSON.

    python bench/gateway_overhead.py [--requests 2000] [--redis-url URL] [--database-url URL]

Without --redis-url, a throwaway redis-server is started when one is installed. The SQLite
database is a fresh file in a temporary folder (WAL, as the server uses it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fimgate.gateway.core import Gateway
from fimgate.gateway.keys import KeyStore
from fimgate.gateway.limits import Limits
from fimgate.gateway.ratelimit import MemoryRateLimiter, RateLimiter
from fimgate.gateway.ratelimit_redis import RedisRateLimiter
from fimgate.store.database import open_database

LIMITS = Limits(rpm=10**9, tpm=10**12)  # never refuse: measure the admitted path


async def _time(n: int, step: Callable[[int], Awaitable[object]]) -> list[float]:
    for i in range(min(50, n)):  # warm-up: connections, statement caches
        await step(-i - 1)
    times = []
    for i in range(n):
        start = time.perf_counter()
        await step(i)
        times.append((time.perf_counter() - start) * 1e6)
    return times


async def limiter_only(limiter: RateLimiter, n: int) -> list[float]:
    async def step(i: int) -> None:
        await limiter.admit("bench", LIMITS, f"r{i}", 100)
        await limiter.settle("bench", f"r{i}", 90)

    try:
        return await _time(n, step)
    finally:
        await limiter.aclose()


async def whole_gateway(database_url: str, limiter: RateLimiter, n: int) -> list[float]:
    """authenticate → admit → close (settle + ledger row), as one FIM request does."""
    database = open_database(database_url)
    gateway = Gateway(database, limiter, LIMITS, output_estimate=64)
    keys = KeyStore(database)
    keys.create_workspace(f"bench{time.time_ns()}")
    workspace = keys.list_workspaces()[-1][0]
    _, key = keys.create_key(workspace)

    async def step(_: int) -> None:
        usage = gateway.open(await gateway.authenticate(key))
        await gateway.admit(usage, "model", prompt_tokens=500, max_new_tokens=64)
        usage.completion_tokens = 20
        await gateway.close(usage, 200)

    try:
        return await _time(n, step)
    finally:
        await gateway.aclose()


def _start_redis() -> tuple[subprocess.Popen, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url", help="also measure this database (e.g. PostgreSQL)")
    parser.add_argument("--json", type=Path, default=Path("bench/gateway_overhead.json"))
    args = parser.parse_args()

    started = None
    redis_url = args.redis_url
    if redis_url is None and (started := _start_redis()):
        redis_url = started[1]
    folder = Path(tempfile.mkdtemp(prefix="fimgate-bench-"))
    sqlite = f"sqlite:///{folder / 'bench.db'}"
    n = args.requests
    cases: dict[str, Callable[[], Awaitable[list[float]]]] = {
        "limiter, memory (admit + settle)": lambda: limiter_only(MemoryRateLimiter(), n),
        "gateway, SQLite + memory limiter": lambda: whole_gateway(sqlite, MemoryRateLimiter(), n),
    }
    if redis_url:
        cases["limiter, Redis (admit + settle)"] = lambda: limiter_only(
            RedisRateLimiter(redis_url, prefix=f"bench{time.time_ns()}"), n
        )
        cases["gateway, SQLite + Redis limiter"] = lambda: whole_gateway(
            sqlite, RedisRateLimiter(redis_url, prefix=f"bench{time.time_ns()}"), n
        )
    if args.database_url:
        cases["gateway, --database-url + memory limiter"] = lambda: whole_gateway(
            args.database_url, MemoryRateLimiter(), n
        )
    results = {}
    try:
        for name, case in cases.items():
            times = asyncio.run(case())
            q = statistics.quantiles(times, n=100)
            results[name] = {"p50_us": q[49], "p95_us": q[94], "mean_us": statistics.fmean(times)}
    finally:
        if started:
            started[0].terminate()
        shutil.rmtree(folder, ignore_errors=True)

    table = Table("per request", "p50 µs", "p95 µs", "mean µs", title=f"{n} requests each")
    for name, r in results.items():
        table.add_row(name, f"{r['p50_us']:.0f}", f"{r['p95_us']:.0f}", f"{r['mean_us']:.0f}")
    Console().print(table)
    args.json.write_text(json.dumps({"requests": n, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
