"""What a request meets when PostgreSQL or Redis is frozen: alive and silent (SIGSTOP to the
server and its children, as a hung host or a black-holed network leaves it: connections open,
nothing answered). The real servers (the session's, thawed before the next test), frozen for
real; the app is the fast tier's (the test engine: no model is needed to wait on a store).
Every request must end with a documented 503 and ``Retry-After`` instead of waiting out the
outage, every row must say what its client got, and the next request after the thaw must be
answered, without a restart.

pytest-timeout (pyproject) is the net for a hang: nothing here asserts a duration.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.fast_app import FastApp, fast_app
from tests.services import PostgresServer, RedisServer, frozen

pytestmark = pytest.mark.anyio

BODY = {"model": "codestral-latest", "prompt": "def add(a, b):\n    ", "suffix": "\n"}
# Short bounds keep the test short; what is tested is that there is one, not its length.
BOUNDS = {"store_read_s": 0.5, "ledger_write_s": 0.5, "redis_timeout_s": 0.5}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _burst(app: FastApp, n: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(app.post(BODY) for _ in range(n))))


def _check_rows_tell_what_clients_got(app: FastApp, responses: list[httpx.Response]) -> None:
    """Each response's row (where it has one) has its status; every 200 has its row."""
    rows = {r.request_id: r for r in app.rows()}
    for response in responses:
        row = rows.get(response.headers.get("x-request-id", ""))
        if response.status_code == 200:
            assert row is not None and row.status == 200
        elif row is not None:
            assert row.status == response.status_code, (row, response.text)


def _unavailable(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.headers.get("retry-after") == "5"
        and response.json()["type"] == "service_unavailable"
    )


async def test_a_frozen_postgres_gets_503s_and_recovers(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    async with fast_app(tmp_path, n_ctx=512, database_url=url, **BOUNDS) as app:
        before = await _burst(app, 2)  # pooled connections, as a server that has been running
        assert [r.status_code for r in before] == [200, 200]
        with frozen(postgres.process):
            during = await _burst(app, 6)
            assert all(_unavailable(r) for r in during), [r.text for r in during]
        await app.gateway.late_rows_written()
        after = await _burst(app, 2)
        assert [r.status_code for r in after] == [200, 200]
        _check_rows_tell_what_clients_got(app, before + during + after)


async def test_a_frozen_redis_gets_503s_and_recovers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with fast_app(tmp_path, n_ctx=512, redis_url=redis_server.url(), **BOUNDS) as app:
        before = await _burst(app, 2)
        assert [r.status_code for r in before] == [200, 200]
        with frozen(redis_server.process):
            during = await _burst(app, 6)
            assert all(_unavailable(r) for r in during), [r.text for r in during]
        after = await _burst(app, 2)
        assert [r.status_code for r in after] == [200, 200]
        _check_rows_tell_what_clients_got(app, before + during + after)
