"""The gateway through a real ``fimgate serve``: keys, browser origins, body cap, rate limits,
settling, the ledger. Run on SQLite, on a real PostgreSQL, and with the model on three
upstream llama.cpp servers instead of in-process (keys, limits and the ledger must not care)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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
LIMIT_HEADERS = (
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-req-minute", "x-ratelimit-remaining-req-minute",
    "x-ratelimit-limit-tokens-minute", "x-ratelimit-remaining-tokens-minute",
)  # fmt: skip


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

    def burst(self, key: str, n: int, body: dict = ONE_TOKEN) -> list[httpx.Response]:
        def one(_: int) -> httpx.Response:
            with self.server.client(key) as c:
                return c.post(URL, json=body)

        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))


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


def test_missing_key_is_401_with_bearer_challenge(gate: Gate) -> None:
    with httpx.Client(base_url=gate.server.url) as c:
        for response in (c.post(URL, json=ONE_TOKEN), c.get("/v1/models")):
            _error(response, 401, "missing_api_key")
            assert response.headers["www-authenticate"] == "Bearer"
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Token abc"):
            response = c.post(URL, json=ONE_TOKEN, headers={"Authorization": header})
            _error(response, 401, "missing_api_key")
        assert c.get("/health").status_code == 200  # the one open route


def test_unknown_key_is_401_and_not_echoed(gate: Gate) -> None:
    real = gate.server.key
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for key in (forged, "fg-000000000000-secret", "sk-not-ours"):
        with gate.server.client(key) as c:
            response = c.post(URL, json=ONE_TOKEN)
        body = _error(response, 401, "invalid_api_key")
        assert key not in response.text and "secret" not in body["message"]
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_unauthenticated_bad_body_is_401_not_422(gate: Gate) -> None:
    with httpx.Client(base_url=gate.server.url) as c:
        _error(c.post(URL, content=b"{not json"), 401, "missing_api_key")


def test_revocation_applies_to_the_next_request(gate: Gate) -> None:
    name, key = gate.workspace()
    with gate.server.client(key) as c:
        assert c.post(URL, json=ONE_TOKEN).status_code == 200
        gate.server.cli("keys", "revoke", key)
        _error(c.post(URL, json=ONE_TOKEN), 401, "invalid_api_key")
    listed = gate.server.cli("keys", "list", "-w", name)
    assert key[3:15] in listed and key.split("-", 2)[2] not in listed  # the id, never the key


# -- origins and size ------------------------------------------------------------------------


@pytest.mark.parametrize("with_key", [True, False])
def test_browser_origin_is_403_without_cors(gate: Gate, with_key: bool) -> None:
    headers = {"Origin": "https://example.com"}
    if with_key:
        headers["Authorization"] = f"Bearer {gate.server.key}"
    with httpx.Client(base_url=gate.server.url, headers=headers) as c:
        responses = [
            c.post(URL, json=ONE_TOKEN),
            c.options(URL, headers={"Access-Control-Request-Method": "POST"}),
        ]
    for response in responses:
        body = _error(response, 403, "browser_origin_refused")
        assert "browser" in body["message"]
        assert not [h for h in response.headers if h.startswith("access-control-")]


def test_body_over_the_cap_is_413(gate: Gate) -> None:
    huge = {**ONE_TOKEN, "prompt": "x = 1\n" * 200_000}  # 1.2 MB
    with gate.server.client() as c:
        _error(c.post(URL, json=huge), 413, "request_too_large")
        # Without a Content-Length (chunked upload) the cap still holds.
        data = json.dumps(huge).encode()
        chunks = (data[i : i + 65536] for i in range(0, len(data), 65536))
        _error(c.post(URL, content=chunks), 413, "request_too_large")
        assert c.post(URL, json=ONE_TOKEN).status_code == 200


# -- rate limits -----------------------------------------------------------------------------


def test_rpm_admits_exactly_the_limit(gate: Gate) -> None:
    name, key = gate.workspace(rpm=10)
    responses = gate.burst(key, 15)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 5
    for response in responses:
        assert all(h in response.headers for h in LIMIT_HEADERS)
        assert response.headers["x-ratelimit-limit-requests"] == "10"
        assert response.headers["x-ratelimit-limit-req-minute"] == "10"
        if response.status_code == 429:
            body = _error(response, 429, "rate_limit_exceeded")
            assert body["type"] == "rate_limit_error"
            assert "10 requests per minute" in body["message"]
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert response.headers["x-ratelimit-remaining-requests"] == "0"
    rows = gate.usage(name)
    assert sorted(r["status"] for r in rows) == statuses


def test_tpm_admits_exactly_the_limit(gate: Gate) -> None:
    with gate.server.client() as c:
        prompt_tokens = c.post(URL, json=ONE_TOKEN).json()["usage"]["prompt_tokens"]
    # Each request reserves its prompt plus max_tokens (1): room for exactly 6.
    _, key = gate.workspace(tpm=6 * (prompt_tokens + 1))
    responses = gate.burst(key, 10)
    assert sorted(r.status_code for r in responses) == [200] * 6 + [429] * 4
    refused = [r for r in responses if r.status_code == 429]
    assert all("tokens per minute" in r.json()["message"] for r in refused)
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)


def test_prompt_over_the_tpm_limit_is_413_not_429(gate: Gate) -> None:
    _, key = gate.workspace(tpm=10)
    with gate.server.client(key) as c:
        response = c.post(URL, json=ONE_TOKEN)
    body = _error(response, 413, "exceeds_token_rate_limit")
    assert "10 tokens" in body["message"] and "limits set" in body["message"]
    assert response.headers["x-ratelimit-limit-tokens"] == "10"
    assert "retry-after" not in response.headers  # waiting would not help


def test_prompt_over_the_context_still_gets_limit_headers(gate: Gate) -> None:
    with gate.server.client() as c:
        response = c.post(URL, json={**ONE_TOKEN, "prompt": "x = 1\n" * 2000})
    _error(response, 400, "context_length_exceeded")
    assert all(h in response.headers for h in LIMIT_HEADERS)


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
    row = None
    for _ in range(50):
        rows = [r for r in gate.usage(name) if r["request_id"] == request_id]
        if rows:
            row = rows[0]
            break
        time.sleep(0.2)
    assert row is not None and row["cancelled"] is True
    assert 3 <= row["completion_tokens"] <= 6  # what was generated before the close
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
