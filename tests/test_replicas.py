"""Two gateway processes sharing one real Redis and one database: one budget between them.
Also the origin allow-list, which only a server started with it shows."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server, sqlite_url, start_server, stop_server
from tests.test_gateway import ONE_TOKEN, URL

ALLOWED = "https://ide.example"


@pytest.fixture(scope="module")
def pair(redis_server) -> Iterator[tuple[Server, Server]]:
    database_url = sqlite_url("replicas")
    common = ["--n-ctx", "1024", "--parallel", "2", "--threads", "1"]
    common += ["--redis-url", redis_server.url()]
    a = start_server("replica-a", *common, "--allowed-origin", ALLOWED, database_url=database_url)
    try:
        b = start_server("replica-b", *common, database_url=database_url)
    except Exception:
        stop_server(a)
        raise
    yield a, b
    stop_server(a)
    stop_server(b)


def test_two_replicas_share_the_request_budget(pair: tuple[Server, Server]) -> None:
    a, b = pair
    a.cli("workspaces", "create", "shared")
    a.cli("limits", "set", "-w", "shared", "--rpm", "10")
    key = a.cli("keys", "create", "-w", "shared").strip()

    def one(i: int) -> tuple[str, int]:
        server = (a, b)[i % 2]
        with server.client(key) as c:
            return server.url, c.post(URL, json=ONE_TOKEN).status_code

    with ThreadPoolExecutor(20) as pool:  # 2x the limit, half through each replica
        results = list(pool.map(one, range(20)))
    statuses = sorted(status for _, status in results)
    assert statuses == [200] * 10 + [429] * 10
    # The budget is shared, not split or doubled: each replica now refuses on its own.
    for server in (a, b):
        with server.client(key) as c:
            response = c.post(URL, json=ONE_TOKEN)
        assert response.status_code == 429
        assert response.headers["x-ratelimit-remaining-requests"] == "0"


def test_allowed_origin_gets_cors_and_others_do_not(pair: tuple[Server, Server]) -> None:
    a, _ = pair
    with a.client(headers={"Origin": ALLOWED}) as c:
        response = c.post(URL, json=ONE_TOKEN)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        preflight = c.options(URL, headers={"Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 200
    with a.client(headers={"Origin": "https://other.example"}) as c:
        response = c.post(URL, json=ONE_TOKEN)
        assert response.status_code == 403
        assert "access-control-allow-origin" not in response.headers
    assert httpx.get(f"{a.url}/health").status_code == 200


def test_unreachable_redis_is_503_not_500_nor_unlimited() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    server = start_server(
        "dead-redis", "--n-ctx", "512", "--redis-url", f"redis://127.0.0.1:{dead}"
    )
    try:
        with server.client() as c:
            response = c.post(URL, json=ONE_TOKEN)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["object"] == "error" and "rate limiter is unavailable" in body["message"]
        ready = httpx.get(f"{server.url}/ready", timeout=10)  # a load balancer moves on
        assert ready.status_code == 503
        assert ready.json()["checks"]["rate_limiter"].startswith("unreachable")
        assert ready.json()["checks"]["database"] == "ok"
    finally:
        stop_server(server)
