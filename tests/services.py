"""Real PostgreSQL and Redis servers for the tests, on loopback, in throwaway folders."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from fimgate.local_process import free_port, stop


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (PostgreSQL is a postmaster and its children)."""
    parents: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat).read_text()
            child, parent = int(text.split(" ", 1)[0]), int(text.rsplit(")", 1)[1].split()[1])
            parents.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo.extend(parents.get(current, []))
    return found


@contextlib.contextmanager
def frozen(process: subprocess.Popen) -> Iterator[None]:
    """The server alive and silent for the block (SIGSTOP to it and its children), as a hung
    host or a black-holed network leaves it: connections open, nothing answered."""
    pids = _tree(process.pid)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@dataclass
class PostgresServer:
    process: subprocess.Popen
    folder: Path
    port: int
    command: list[str]

    @classmethod
    def start(cls) -> PostgresServer | None:
        initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
        if not initdb or not postgres:
            return None
        folder = Path(tempfile.mkdtemp(prefix="fimgate-pg-"))
        # PostgreSQL refuses to run as root: run it as the packaged 'postgres' user then.
        as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        data = folder / "data"
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        port = free_port()
        command = [
            *as_user, postgres, "-D", str(data), "-p", str(port), "-k", str(folder),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
        ]  # fmt: skip
        server = cls(_spawn(command), folder, port, command)
        try:
            server._wait_up()
        except RuntimeError:
            server.stop()
            raise
        return server

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.3)
        raise RuntimeError("postgres did not start")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"fimgate_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def halt(self) -> None:
        """Shut the server down (fast: clients still connected are disconnected, where the
        default shutdown waits for them to leave), keeping its data: ``resume`` starts it."""
        tree = _tree(self.process.pid)  # under runuser (as root), the postmaster is its child
        postmaster = tree[1] if os.geteuid() == 0 and len(tree) > 1 else tree[0]
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGINT)
        stop(self.process)

    def resume(self) -> None:
        self.process = _spawn(self.command)
        self._wait_up()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.folder, ignore_errors=True)


def _spawn(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int
    command: list[str]

    @classmethod
    def start(cls) -> RedisServer | None:
        binary = shutil.which("redis-server")
        if binary is None:
            return None
        port = free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"]  # fmt: skip
        server = cls(_spawn(command), port, command)
        try:
            server._wait_up()
        except RuntimeError:
            server.process.kill()
            raise
        return server

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("redis-server did not start")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def halt(self) -> None:
        """Stop the server (what it held is gone: no persistence); ``resume`` starts it."""
        stop(self.process)

    def resume(self) -> None:
        self.process = _spawn(self.command)
        self._wait_up()

    def stop(self) -> None:
        stop(self.process)
