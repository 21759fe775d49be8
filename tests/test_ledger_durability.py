"""Kill the server with SIGKILL under load: every request a client got an answer for has its
row in the ledger (rows are committed before the last byte of the answer is sent)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import fimgate_cli, start_server
from tests.test_gateway import ONE_TOKEN, URL


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_under_load_loses_no_answered_row(backend: str, request) -> None:
    database_url = None
    if backend == "postgres":
        database_url = request.getfixturevalue("postgres").new_database()
    server = start_server(f"kill-{backend}", "--n-ctx", "1024", database_url=database_url)
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        body = {**ONE_TOKEN, "max_tokens": 2, "stream": n % 2 == 0}
        with server.client(timeout=30) as c:
            while not stop.is_set():
                try:
                    response = c.post(URL, json=body)
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code != 200:
                    continue
                if body["stream"]:
                    if not response.text.rstrip().endswith("data: [DONE]"):
                        continue  # cut off mid-stream: not an answer
                    request_id = json.loads(response.text.split("\n", 1)[0][6:])["id"]
                else:
                    request_id = response.json()["id"]
                with lock:
                    answered.append(request_id)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(6)]
    for thread in threads:
        thread.start()
    while len(answered) < 20:  # however long this machine takes (pytest's timeout bounds it)
        time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
    server.process.wait(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answered) >= 20
    rows = json.loads(fimgate_cli(server.database_url, "usage", "--json"))
    recorded = {r["request_id"] for r in rows}
    missing = [i for i in answered if i not in recorded]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no row"
