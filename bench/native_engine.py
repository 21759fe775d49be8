"""The packaged llama.cpp (the xllamacpp wheel, one build for every x86-64 CPU) beside a
``llama-server`` built for this machine's own CPU (docs/deploy.md, "An engine built for the
CPU"), as upstreams of the gateway: same GGUF, threads and prompts, one server at a time,
alternating, several rounds.

    python bench/native_engine.py LLAMA_SERVER [--model qwen2.5-coder-1.5b] [--rounds 2]

For each server: prompt tokens read per second on unrelated ~1,000-token FIM prompts (no
cache), tokens written per second, and whether its greedy completions are the same text as
the packaged build's (kernels of another instruction set may round differently). Last, one
completion through ``fimgate serve --upstream`` in front of the native server, as the docs
say to run it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from peers import first_key
from workloads import cold

from fimgate.local_process import free_port, stop, wait_until_up
from fimgate.modelpack import locate
from fimgate.settings import StoreSettings

N_PREDICT = 32


def start(name: str, command: list[str], port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    wait_until_up(process, f"http://127.0.0.1:{port}/health", log, 300)
    return process


def measure(url: str, prompts: list[str]) -> list[dict]:
    """Each prompt read cold (no cache) and N_PREDICT tokens written, greedy."""
    runs = []
    with httpx.Client(base_url=url, timeout=600) as client:
        for prompt in prompts:
            body = {
                "prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, "top_k": 1,
                "cache_prompt": False, "seed": 0,
            }  # fmt: skip
            answer = client.post("/completion", json=body).raise_for_status().json()
            timings = answer["timings"]
            runs.append(
                {
                    "read_tps": timings["prompt_per_second"],
                    "write_tps": timings["predicted_per_second"],
                    "text": answer["content"],
                }
            )
    return runs


def through_gateway(model: Path, upstream: str, prompt: str) -> str:
    """One completion from ``fimgate serve --upstream`` in front of the native server."""
    folder = Path(tempfile.mkdtemp(prefix="fimgate-native-"))
    port = free_port()
    fimgate = Path(sys.executable).parent / "fimgate"
    command = [
        str(fimgate), "serve", "--model", str(model), "--port", str(port),
        "--data-dir", str(folder), "--upstream", upstream,
    ]  # fmt: skip
    log = folder / "log"
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        headers = first_key(folder)
        wait_until_up(process, f"http://127.0.0.1:{port}/health", log, 120, headers)
        body = {"model": "codestral-latest", "prompt": prompt, "max_tokens": 16}
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/fim/completions", json=body, headers=headers, timeout=600
        )
        return f"{response.status_code} {response.json()['choices'][0]['message']['content']!r}"
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("llama_server", type=Path, help="llama-server built for this CPU")
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = locate(args.model, StoreSettings().data_dir)
    prompts = [
        f"<|fim_prefix|>{p.prefix}<|fim_suffix|>{p.suffix}<|fim_middle|>"
        for p in cold(args.prompts)
    ]
    fimgate = Path(sys.executable).parent / "fimgate"
    threads = ["--threads", str(args.threads), "--parallel", "1"]
    servers = {
        "packaged (xllamacpp)": [
            str(fimgate), "engine-server", "--model", str(model), "--n-ctx", "4096", *threads,
        ],
        "native build": [
            str(args.llama_server), "-m", str(model), "--ctx-size", "4096", *threads,
        ],
    }  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name in servers}
    folder = Path(tempfile.mkdtemp(prefix="fimgate-native-bench-"))
    for round_ in range(args.rounds):
        for name, command in servers.items():
            port = free_port()
            process = start(name, [*command, "--port", str(port)], port, folder / "log")
            try:
                results[name] += measure(f"http://127.0.0.1:{port}", prompts)
            finally:
                stop(process)
            runs = results[name][-len(prompts) :]
            print(f"round {round_ + 1} {name}: read", [round(r["read_tps"], 1) for r in runs])
    base = results["packaged (xllamacpp)"]
    print(f"\nmodel {model.name}, threads {args.threads}, {len(prompts)} prompts x {args.rounds}")
    print("| server | prompt tok/s (median) | write tok/s (median) | same text as packaged |")
    print("| --- | --- | --- | --- |")
    for name, runs in results.items():
        same = sum(r["text"] == b["text"] for r, b in zip(runs, base, strict=True))
        read = statistics.median(r["read_tps"] for r in runs)
        write = statistics.median(r["write_tps"] for r in runs)
        print(f"| {name} | {read:.1f} | {write:.1f} | {same}/{len(runs)} |")
    port = free_port()
    native = start("native", [*servers["native build"], "--port", str(port)], port, folder / "n")
    try:
        print("through the gateway:", through_gateway(model, f"http://127.0.0.1:{port}", "def "))
    finally:
        stop(native)


if __name__ == "__main__":
    main()
