"""What the HTTP and gateway layers cost per request, this checkout beside another one (an
earlier commit: ``git worktree add /tmp/before HEAD~1``), in one run: both serve the 0.5B
with the same settings, and the cheapest real completion (a cached prompt, one token),
streamed and not, is sent to each in turn.

    python bench/http_overhead.py --other /tmp/before [--requests 200]

Prints p50/p95 per side and way, and the difference of medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from local_server import start_fimgate

BODY = {"model": "codestral-latest", "prompt": "def add(a, b):\n    return ", "max_tokens": 1}
SETTINGS = ("--n-ctx", "1024", "--threads", "1")


def one(client: httpx.Client, stream: bool) -> float:
    started = time.perf_counter()
    response = client.post("/v1/fim/completions", json={**BODY, "stream": stream})
    response.raise_for_status()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", type=Path, required=True, help="another checkout")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="fimgate-http-"))
    sides = {
        "this checkout": start_fimgate(folder / "this", *SETTINGS),
        "other": start_fimgate(folder / "other", *SETTINGS, checkout=args.other),
    }
    times: dict[tuple[str, bool], list[float]] = {}
    try:
        clients = {
            name: httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {s.key}"})
            for name, s in sides.items()
        }
        for i in range(args.requests + 10):
            for stream in (False, True):
                for name, client in clients.items():
                    took = one(client, stream)
                    if i >= 10:  # the first fill the prompt cache
                        times.setdefault((name, stream), []).append(took)
    finally:
        for server in sides.values():
            server.stop()
    print(f"{args.requests} requests per side and way, alternating; ms")
    for stream in (False, True):
        medians = {}
        for name in sides:
            q = statistics.quantiles(times[name, stream], n=100)
            medians[name] = q[49]
            way = "streamed" if stream else "JSON"
            print(f"  {way:8} {name:14} p50 {q[49]:7.2f}  p95 {q[94]:7.2f}")
        diff = medians["this checkout"] - medians["other"]
        print(f"  {'':8} difference of medians: {diff:+.2f} ms")


if __name__ == "__main__":
    main()
