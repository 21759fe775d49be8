"""The servers a benchmark compares, each started on loopback with the same GGUF and threads,
and spoken to in its own best dialect for FIM:

- ``fimgate``: ``POST /v1/fim/completions`` (what Continue sends), through the whole gateway.
- ``llama.cpp``: llama.cpp's server engine (xllamacpp), ``POST /infill`` with
  ``input_prefix``/``input_suffix``, ``cache_prompt``, ``--cache-reuse 256``.
- ``fimgate-upstreams-N``: the same gateway answering from N ``fimgate engine-server``
  processes (llama.cpp's server, over HTTP) instead of in-process, ``--upstream`` each. On one
  machine they share its cores (threads split between them): what this shows is the hop's
  and the routing's cost and the cache reuse, not scaling. ``fimgate-upstreams-N-round-robin``:
  the same, routed round-robin instead of by affinity (``FIMGATE_ROUTING``).
- ``llama-cpp-python``: ``python -m llama_cpp.server``, ``POST /v1/completions`` with the Qwen
  FIM prompt built here (its own ``suffix`` handling is broken in 0.3.36: FIM token ids 0).
- ``fimgate@PATH``: ``fimgate`` as another checkout has it (an earlier commit: ``git
  worktree add /tmp/before HEAD~1``), with this venv: this change beside the one before it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fimgate.local_process import free_port, stop, wait_until_up
from fimgate_eval.runner import fimgate_command

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    process: subprocess.Popen
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    folder: Path | None = None
    upstreams: list[subprocess.Popen] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads, and its upstream
        servers') so far."""
        total = 0.0
        for process in (self.process, *self.upstreams):
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def request(self, prefix: str, suffix: str, max_tokens: int) -> tuple[str, dict]:
        if self.name.startswith("fimgate"):
            return "/v1/fim/completions", {
                "model": "codestral-latest", "prompt": prefix, "suffix": suffix,
                "max_tokens": max_tokens, "temperature": 0, "stream": True,
            }  # fmt: skip
        if self.name == "llama.cpp":
            return "/infill", {
                "input_prefix": prefix, "input_suffix": suffix, "n_predict": max_tokens,
                "temperature": 0, "cache_prompt": True, "stream": True,
            }  # fmt: skip
        prompt = f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
        return "/v1/completions", {
            "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stop": ["<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>"],
        }  # fmt: skip

    async def stream(
        self, client: httpx.AsyncClient, prefix: str, suffix: str, max_tokens: int
    ) -> AsyncIterator[str | int]:
        """Text pieces as the server sends them, then the completion tokens where the server
        reports them (a piece may hold several); closing the iterator closes the request."""
        path, body = self.request(prefix, suffix, max_tokens)
        async with client.stream("POST", self.url + path, json=body, headers=self.headers) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "choices" in event:
                    choice = event["choices"][0]
                    text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                else:
                    text = event.get("content", "")
                yield text
                # fimgate's last chunk has the usage; llama.cpp's last event its count.
                tokens = (event.get("usage") or {}).get("completion_tokens")
                if tokens is None and event.get("stop"):
                    tokens = event.get("tokens_predicted")
                if tokens is not None:
                    yield int(tokens)

    def stop(self) -> None:
        for process in (self.process, *self.upstreams):
            stop(process)
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def first_key(folder: Path) -> dict[str, str]:
    """The headers with the first key of a ``fimgate serve`` on data folder ``folder``: it
    appears once the database is set up, before the model loads."""
    key_file = folder / "first-api-key"
    for _ in range(600):
        if key_file.exists() and key_file.read_text().strip():
            break
        time.sleep(0.1)
    return {"Authorization": f"Bearer {key_file.read_text().strip()}"}


def start(name: str, model: Path, threads: int, parallel: int, lcp_python: str | None) -> Target:
    folder = Path(tempfile.mkdtemp(prefix=f"fimgate-bench-{name.partition('@')[0]}-"))
    log = folder / "log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers: dict[str, str] = {}
    fimgate = Path(sys.executable).parent / "fimgate"
    upstreams: list[subprocess.Popen] = []
    routing: dict[str, str] = {}
    if name.startswith("fimgate-upstreams-"):
        number, _, policy = name.removeprefix("fimgate-upstreams-").partition("-")
        count = int(number)
        routing["FIMGATE_ROUTING"] = policy or "affinity"
        urls = []
        for i in range(count):
            upstream_port = free_port()
            command = [
                str(fimgate), "engine-server", "--model", str(model), "--port", str(upstream_port),
                "--threads", str(max(1, threads // count)), "--parallel", str(parallel),
            ]  # fmt: skip
            upstream_log = folder / f"upstream-{i}.log"
            with upstream_log.open("w") as out:
                upstreams.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{upstream_port}")
            wait_until_up(upstreams[-1], f"{urls[-1]}/health", upstream_log, 180)
        command = [
            str(fimgate), "serve", "--model", str(model), "--port", str(port),
            "--data-dir", str(folder), *(arg for url in urls for arg in ("--upstream", url)),
        ]  # fmt: skip
    elif name == "fimgate" or name.startswith("fimgate@"):
        command = [
            *fimgate_command(name.partition("@")[2] or None), "serve", "--model", str(model),
            "--port", str(port), "--threads", str(threads), "--parallel", str(parallel),
            "--data-dir", str(folder),
        ]  # fmt: skip
    elif name == "llama.cpp":
        script = ROOT / "bench" / "llamacpp_server.py"
        command = [sys.executable, str(script), str(model), str(port), str(threads), str(parallel)]
    else:
        if not lcp_python:
            raise ValueError("llama-cpp-python needs --llama-cpp-python PYTHON")
        command = [
            lcp_python, "-m", "llama_cpp.server", "--model", str(model), "--port", str(port),
            "--n_ctx", "8192", "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--cache", "true", "--cache_type", "ram",
            # Queue concurrent requests instead of cutting the running one off (the default
            # cuts other editors' completions mid-stream).
            "--interrupt_requests", "false",
        ]  # fmt: skip
    # The peers have no rate limits: fimgate's (60,000 tokens a minute per workspace by
    # default) would answer a fast run with 429s; serving is measured here, not the policy.
    env = {**os.environ, "FIMGATE_DEFAULT_RPM": "1000000", "FIMGATE_DEFAULT_TPM": "1000000000"}
    env |= routing
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if name.startswith("fimgate"):
        headers = first_key(folder)
    probe = url + ("/v1/models" if name == "llama-cpp-python" else "/health")
    wait_until_up(process, probe, log, 180, headers)
    return Target(name, process, url, headers, folder, upstreams)
