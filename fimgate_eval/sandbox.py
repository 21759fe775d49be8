"""Runs a model-written Python program to see whether its tests pass, without letting it harm
the run or the machine.

Each program runs in its own process and session, in an empty temporary folder, with a
timeout (the whole process group is killed on expiry, children included), limits on memory,
CPU time, file size and core dumps, an isolated interpreter (``-I``: no user site, no
environment), and no network: in a network namespace of its own where ``unshare --net``
works (root, or unprivileged user namespaces), and with Python's socket functions refused in
any case. A crash, a hang, or a fork of the candidate is a failed candidate, never a failed run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

Outcome = Literal["passed", "failed", "timeout"]

TIMEOUT_S = 3.0  # the original harness's
MEMORY_BYTES = 2 << 30
FILE_BYTES = 16 << 20
CPU_S = 10

# Runs first in the child: limits, then the program as __main__.
_GUARD = f"""
import resource, socket, sys
for limit, value in ((resource.RLIMIT_AS, {MEMORY_BYTES}), (resource.RLIMIT_FSIZE, {FILE_BYTES}),
                     (resource.RLIMIT_CPU, {CPU_S}), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(limit, (value, value))
def _refused(*args, **kwargs):
    raise OSError("no network in the evaluation sandbox")
for name in ("create_connection", "getaddrinfo", "gethostbyname", "socketpair", "fromfd"):
    setattr(socket, name, _refused)
socket.socket.connect = socket.socket.bind = socket.socket.sendto = _refused
path = sys.argv[1]
sys.argv = [path]
with open(path) as source:
    code = compile(source.read(), path, "exec")
exec(code, {{"__name__": "__main__"}})
"""


@functools.cache
def _no_network_prefix() -> tuple[str, ...]:
    """``unshare --net`` where it works here; otherwise the guard's refusals alone."""
    command = ("unshare", "--net", "--")
    try:
        probe = subprocess.run([*command, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return command if probe.returncode == 0 else ()


def run_program(source: str, timeout: float = TIMEOUT_S) -> Outcome:
    """``passed`` when the program exits 0 within ``timeout`` seconds."""
    with tempfile.TemporaryDirectory(prefix="fimgate-sandbox-") as folder:
        program = Path(folder) / "candidate.py"
        program.write_text(source)
        process = subprocess.Popen(
            [*_no_network_prefix(), sys.executable, "-I", "-c", _GUARD, str(program)],
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as one
        )
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):  # its own children go with it
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if code is None:
        return "timeout"
    return "passed" if code == 0 else "failed"
