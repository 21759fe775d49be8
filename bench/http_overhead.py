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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from fimgate.local_process import free_port, stop, wait_until_up

BODY = {"model": "codestral-latest", "prompt": "def add(a, b):\n    return ", "max_tokens": 1}
# Runs ``fimgate`` from another checkout with this venv: the editable install's finder would
# otherwise import this checkout's package whatever PYTHONPATH says.
RUN_FROM = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)];"
    "sys.path.insert(0, sys.argv.pop(1)); from fimgate.cli import main; main()"
)


def start(checkout: Path | None, folder: Path, name: str) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    data = folder / name
    data.mkdir()
    args = ["serve", "--model", "qwen2.5-coder-0.5b", "--port", str(port), "--data-dir",
            str(data), "--n-ctx", "1024", "--threads", "1"]  # fmt: skip
    if checkout is None:
        command = [str(Path(sys.executable).parent / "fimgate"), *args]
    else:
        command = [sys.executable, "-c", RUN_FROM, str(checkout), *args]
    log = data / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health", log, 300)
    return process, url, (data / "first-api-key").read_text().strip()


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
        "this checkout": start(None, folder, "this"),
        "other": start(args.other, folder, "other"),
    }
    times: dict[tuple[str, bool], list[float]] = {}
    try:
        clients = {
            name: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
            for name, (_, url, key) in sides.items()
        }
        for i in range(args.requests + 10):
            for stream in (False, True):
                for name, client in clients.items():
                    took = one(client, stream)
                    if i >= 10:  # the first fill the prompt cache
                        times.setdefault((name, stream), []).append(took)
    finally:
        for process, _, _ in sides.values():
            stop(process)
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
