"""A server started as a child process on loopback: a free port, waiting until it answers,
stopping it. Used by ``fimgate eval`` (the fimgate it starts), the benches (fimgate and its
peers) and the tests."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(
    process: subprocess.Popen,
    probe: str,
    log: Path,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Returns once ``probe`` answers 200; raises with the end of ``log`` if the process
    exits first or ``timeout`` seconds pass (then it is killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(probe, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server did not start in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """Terminate, and kill what does not exit within ``grace`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
