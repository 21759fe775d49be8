"""Runs evaluation tasks through a fimgate's HTTP API (the whole serving path is what is
measured), one request at a time, or starts a fimgate to do so."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from fimgate.engines.loading import CODESTRAL_ALIASES
from fimgate.gateway.bootstrap import FIRST_WORKSPACE
from fimgate.gateway.keys import KeyStore
from fimgate.local_process import free_port, stop, wait_until_up
from fimgate.store.database import Database
from fimgate_eval.humaneval_fim import MAX_TOKENS, SUFFIX_TOKENS


class FimTask(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def suffix(self) -> str: ...


TaskT = TypeVar("TaskT", bound=FimTask)


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: int  # completion tokens the server generated (its usage)
    seconds: float | None = None  # how long it took, where the suite measures it


@dataclass(frozen=True)
class Endpoint:
    url: str  # e.g. http://127.0.0.1:8000 (the API's /v1/fim/completions is under it)
    key: str
    model: str = CODESTRAL_ALIASES[0]
    database_url: str | None = None  # the server's store, where the benchmark started it

    def fresh_key(self) -> str:
        """A new key of the first key's workspace: a developer of its own, with nothing in
        the server's memory of editors (the server's own store; else the one key)."""
        if self.database_url is None:
            return self.key
        database = Database(self.database_url)
        try:
            return KeyStore(database).create_key(FIRST_WORKSPACE)[1]
        finally:
            database.close()


def complete(client: httpx.Client, endpoint: Endpoint, task: FimTask) -> Completion:
    """The server's greedy completion of one task, as an editor would get it (no stop strings
    of the client's: the server's own endings apply)."""
    body = {
        "model": endpoint.model, "prompt": task.prefix, "suffix": task.suffix,
        "max_tokens": MAX_TOKENS, "temperature": 0,
    }  # fmt: skip
    response = client.post(f"{endpoint.url}/v1/fim/completions", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{task.name}: HTTP {response.status_code}: {response.text[:300]}")
    answer = response.json()
    text = answer["choices"][0]["message"]["content"]
    return Completion(text, answer["usage"]["completion_tokens"])


def in_send_order(tasks: Sequence[TaskT]) -> list[TaskT]:
    """The order ``run`` sends tasks in: sorted by prompt (see there)."""
    return sorted(tasks, key=lambda task: (task.prefix, task.suffix))


def run(
    endpoint: Endpoint, tasks: Sequence[FimTask], finished: Callable[[FimTask, Completion], None]
) -> None:
    """Completes every task, one request at a time, calling ``finished`` with each completion.

    Tasks are sent sorted by prompt: the records of one problem then follow each other, and
    the server's prompt cache reads only where each differs from the last (a fifth to a third
    less time for the 1.5B; four requests at a time were slower on 2 cores, where decoding a
    batch of four costs about four single decodes)."""
    headers = {"Authorization": f"Bearer {endpoint.key}"}
    with httpx.Client(headers=headers, timeout=600) as client:
        for task in in_send_order(tasks):
            finished(task, complete(client, endpoint, task))


# HumanEval-FIM's prompt budget (the report's 512 suffix tokens; the server's default is 64);
# its records are separate problems, not one developer's files: no editor memory.
HUMANEVAL_SETTINGS = {
    "FIMGATE_MAX_SUFFIX_TOKENS": str(SUFFIX_TOKENS),
    "FIMGATE_EDITOR_MEMORY": "false",
}


# Runs ``fimgate`` from another checkout with this venv: the editable install's finder would
# otherwise import this checkout's package whatever PYTHONPATH says.
RUN_FROM = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)];"
    "sys.path.insert(0, sys.argv.pop(1)); from fimgate.cli import main; main()"
)


def fimgate_command(checkout: str | None = None) -> list[str]:
    """``fimgate`` as this checkout has it, or as ``checkout`` (another one) has it."""
    if checkout:
        return [sys.executable, "-c", RUN_FROM, checkout]
    return [str(Path(sys.executable).parent / "fimgate")]


@contextmanager
def started_server(
    model: str, threads: int | None, settings: dict[str, str] | None = None
) -> Iterator[Endpoint]:
    """A ``fimgate serve`` of ``model`` on loopback with a throwaway database and key, with
    ``settings`` (FIMGATE_* variables) over its defaults and no rate limits (a benchmark
    measures completions, not the policy). With ``FIMGATE_EVAL_CHECKOUT=PATH`` in the
    environment, the server is another checkout's (an earlier commit, to compare)."""
    with tempfile.TemporaryDirectory(prefix="fimgate-eval-") as folder:
        port = free_port()
        key_file = Path(folder) / "key"
        command = [
            *fimgate_command(os.environ.get("FIMGATE_EVAL_CHECKOUT")), "serve", "--model", model,
            "--port", str(port),
            "--database-url", f"sqlite:///{folder}/eval.db", "--bootstrap-key-file", str(key_file),
        ]  # fmt: skip
        if threads:
            command += ["--threads", str(threads)]
        env = {
            **os.environ,
            "FIMGATE_DEFAULT_RPM": "1000000",
            "FIMGATE_DEFAULT_TPM": "1000000000",
            **(settings or {}),
        }
        log = Path(folder) / "serve.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(process, f"{url}/health", log, 600)  # the first run assembles the model
            database = f"sqlite:///{folder}/eval.db"
            yield Endpoint(url, key_file.read_text().strip(), database_url=database)
        finally:
            stop(process)
