"""What the gateway adds to each request: key check, limit lookup, rate-limit admission and
settling, the ledger row. Prints a table (microseconds per request) and writes JSON.

    python bench/gateway_overhead.py [--requests 2000] [--redis-url URL] [--database-url URL]
                                     [--server-url http://127.0.0.1:8000 --key-file FILE]

With --server-url, the same small repeated completion (prompt cached, one token) is timed
end to end through that running server, to put the gateway's share in proportion.
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
from fimgate.gateway.outcome import Outcome, RequestState
from fimgate.gateway.ratelimit import MemoryRateLimiter, RateLimiter
from fimgate.gateway.ratelimit_redis import RedisRateLimiter
from fimgate.store.database import open_database
from fimgate.store.tables import utcnow

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
    """authenticate → admit → settle (ledger row + reservation), as one FIM request does."""
    database = open_database(database_url)
    gateway = Gateway(database, limiter, LIMITS, output_estimate=64)
    keys = KeyStore(database)
    keys.create_workspace(f"bench{time.time_ns()}")
    workspace = keys.list_workspaces()[-1][0]
    _, key = keys.create_key(workspace)

    async def step(i: int) -> None:
        principal = await gateway.authenticate(key)
        request_id = f"bench-{i}-{time.perf_counter_ns()}"
        admission = await gateway.admit(principal, request_id, "model", (), 500, 64)
        await gateway.settle(
            Outcome(
                request_id, "fim", None, principal, utcnow(), "model", False, RequestState.ANSWERED,
                200, 500, 20, 0.01, 0.005, admission, admission.decision, None,
            )
        )  # fmt: skip

    try:
        return await _time(n, step)
    finally:
        await gateway.aclose()


def end_to_end(url: str, key: str, n: int = 40) -> list[float]:
    """Wall time of a cheapest-possible real completion: cached prompt, one token."""
    import httpx

    body = {"model": "codestral-latest", "prompt": "def add(a, b):\n    return ", "max_tokens": 1}
    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for i in range(n + 5):
            start = time.perf_counter()
            client.post("/v1/fim/completions", json=body).raise_for_status()
            if i >= 5:  # the first ones fill the prompt cache
                times.append((time.perf_counter() - start) * 1e6)
    return times


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


async def _as_async(fn: Callable[..., list[float]], *args: object) -> list[float]:
    return fn(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url", help="also measure this database (e.g. PostgreSQL)")
    parser.add_argument("--server-url", help="a running fimgate, for end-to-end proportion")
    parser.add_argument("--key-file", type=Path, help="its API key (e.g. DATA_DIR/first-api-key)")
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
    if args.server_url and args.key_file:
        key = args.key_file.read_text().strip()
        cases["end to end: cached prompt, 1 token (HTTP)"] = lambda: _as_async(
            end_to_end, args.server_url, key
        )
    try:
        for name, case in cases.items():
            times = asyncio.run(case())
            q = statistics.quantiles(times, n=100)
            results[name] = {"p50_us": q[49], "p95_us": q[94], "mean_us": statistics.fmean(times)}
    finally:
        if started:
            started[0].terminate()
        shutil.rmtree(folder, ignore_errors=True)

    title = f"{n} requests each" + (" (end to end: 40)" if args.server_url else "")
    table = Table("per request", "p50 µs", "p95 µs", "mean µs", title=title)
    for name, r in results.items():
        table.add_row(name, f"{r['p50_us']:.0f}", f"{r['p95_us']:.0f}", f"{r['mean_us']:.0f}")
    Console().print(table)
    args.json.write_text(json.dumps({"requests": n, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
