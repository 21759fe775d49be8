"""A ``fimgate serve`` of this checkout (or of another one) for a benchmark: started on a free
port with its own data folder and SQLite database, its first key read back."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fimgate.local_process import free_port, stop, wait_until_up
from fimgate_eval.runner import fimgate_command


@dataclass
class LocalServer:
    process: subprocess.Popen
    url: str
    key: str
    database_url: str
    folder: Path

    def stop(self) -> None:
        stop(self.process)


def start_fimgate(
    folder: Path,
    *args: str,
    model: str = "qwen2.5-coder-0.5b",
    checkout: Path | None = None,
    env: dict[str, str] | None = None,
) -> LocalServer:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    database = f"sqlite:///{folder / 'fimgate.db'}"
    serve = [
        "serve", "--model", model, "--port", str(port), "--data-dir", str(folder),
        "--database-url", database, "--bootstrap-key-file", str(folder / "key"), *args,
    ]  # fmt: skip
    command = [*fimgate_command(str(checkout) if checkout else None), *serve]
    log = folder / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, f"{url}/health", log, 300)
    return LocalServer(process, url, (folder / "key").read_text().strip(), database, folder)
