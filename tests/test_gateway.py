"""The gateway through a real ``fimgate serve`` with the real model: a key revoked by the CLI,
the limit headers of an answer, a cancelled stream charged what the model generated, ledger
rows that match the answers, and no key in the log. Run on SQLite, on a real PostgreSQL, and
with the model on three upstream llama.cpp servers instead of in-process (keys, limits and
the ledger must not care). Every refusal that needs no model (401, 403, 413, 422, 429) is the
fast tier's: tests/test_fast_serving.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Server, start_server, stop_server, upstream_args

URL = "/v1/fim/completions"
# About 40 prompt tokens: a request that stops early frees too little to admit an extra one.
PROMPT = (
    "import math\n\n\ndef circle_area(radius: float) -> float:\n"
    '    """Return the area of a circle with the given radius."""\n    return '
)
ONE_TOKEN = {"model": "codestral-latest", "prompt": PROMPT, "suffix": "\n", "max_tokens": 1}


class Gate:
    """A server plus the keys the tests made (to check none of them reaches the log)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.keys = [server.key]
        self._n = 0

    def workspace(self, rpm: int | None = None, tpm: int | None = None) -> tuple[str, str]:
        """A new workspace with these limits; (its name, a key)."""
        self._n += 1
        name = f"ws{self._n}"
        self.server.cli("workspaces", "create", name)
        if rpm or tpm:
            limits = [*(["--rpm", str(rpm)] if rpm else []), *(["--tpm", str(tpm)] if tpm else [])]
            self.server.cli("limits", "set", "-w", name, *limits)
        key = self.server.cli("keys", "create", "-w", name).strip()
        self.keys.append(key)
        return name, key

    def usage(self, workspace: str) -> list[dict]:
        return json.loads(self.server.cli("usage", "--json", "-w", workspace))


@pytest.fixture(scope="module", params=["sqlite", "postgres", "upstreams"])
def gate(request: pytest.FixtureRequest) -> Iterator[Gate]:
    database_url = None
    args = ["--n-ctx", "1024"]
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres").new_database()
    if request.param == "upstreams":
        args = upstream_args(request.getfixturevalue("engine_servers"))
    server = start_server(f"gateway-{request.param}", *args, database_url=database_url)
    gate = Gate(server)
    yield gate
    stop_server(server)
    log = server.log.read_text()
    assert "POST /v1/fim/completions" in log  # the access log was written
    for key in gate.keys:  # and no key, nor its secret half, ever reached it
        assert key not in log and key.split("-", 2)[2] not in log


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["object"] == "error" and body["code"] == code and body["message"]
    return body


# -- keys ------------------------------------------------------------------------------------


def test_revocation_applies_to_the_next_request(gate: Gate) -> None:
    name, key = gate.workspace()
    with gate.server.client(key) as c:
        assert c.post(URL, json=ONE_TOKEN).status_code == 200
        gate.server.cli("keys", "revoke", key)
        _error(c.post(URL, json=ONE_TOKEN), 401, "invalid_api_key")
    listed = gate.server.cli("keys", "list", "-w", name)
    assert key[3:15] in listed and key.split("-", 2)[2] not in listed  # the id, never the key


# -- rate limits -----------------------------------------------------------------------------


def test_default_limits_and_headers_on_success(gate: Gate) -> None:
    _, key = gate.workspace()
    with gate.server.client(key) as c:
        response = c.post(URL, json=ONE_TOKEN)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "500"
    assert response.headers["x-ratelimit-limit-tokens-minute"] == "60000"
    assert response.headers["x-ratelimit-remaining-requests"] == "499"
    assert response.headers["x-request-id"] == response.json()["id"]


def test_cancelled_stream_is_charged_what_it_generated(gate: Gate) -> None:
    name, key = gate.workspace(tpm=100_000)
    long = {
        "model": "codestral-latest", "prompt": "def fibonacci(n):\n", "suffix": "",
        "max_tokens": 200, "stream": True,
    }  # fmt: skip
    seen = 0
    with gate.server.client(key) as c, c.stream("POST", URL, json=long) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                request_id = chunk["id"]
                seen += bool(chunk["choices"][0]["delta"]["content"])
                if seen == 3:
                    break  # leaving the block closes the connection
    # The row is written once the server has seen the client go (pytest's timeout bounds it).
    while not (rows := [r for r in gate.usage(name) if r["request_id"] == request_id]):
        time.sleep(0.05)
    row = rows[0]
    assert row["cancelled"] is True
    # What was generated before the close: at least what was read, far from max_tokens.
    assert 3 <= row["completion_tokens"] < 200
    # The limiter was settled to the same count, not to max_tokens or the estimate.
    with gate.server.client(key) as c:
        after = c.post(URL, json=ONE_TOKEN)
    used = 100_000 - int(after.headers["x-ratelimit-remaining-tokens"])
    next_reserved = after.json()["usage"]["prompt_tokens"] + 1
    assert used - next_reserved == row["prompt_tokens"] + row["completion_tokens"]


def test_ledger_rows_match_answers(gate: Gate) -> None:
    name, key = gate.workspace()
    with gate.server.client(key) as c:
        plain = c.post(URL, json=ONE_TOKEN).json()
        streamed = c.post(URL, json={**ONE_TOKEN, "stream": True}).text
        c.post(URL, json={**ONE_TOKEN, "model": "nope"})
    stream_id = json.loads(streamed.splitlines()[0][6:])["id"]
    rows = {r["request_id"]: r for r in gate.usage(name)}
    assert len(rows) == 3
    row = rows[plain["id"]]
    assert row["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    assert row["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert (row["status"], row["cancelled"], row["model"]) == (200, False, "qwen2.5-coder-0.5b")
    assert row["latency_ms"] > 0 and row["key_id"] == key[3:15]
    assert rows[stream_id]["status"] == 200
    assert sorted(r["status"] for r in rows.values()) == [200, 200, 404]
    table = gate.server.cli("usage", "-w", name, "--since", "1h")
    assert "3 requests" in table
