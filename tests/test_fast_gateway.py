"""The gateway when what it stands on fails (the fast tier): a rate limiter or a database
that cannot be reached refuses a request with a 503 (never lets it through unchecked, never a
500), and what is already answered is still recorded. The real SQLite store, broken for
real; the rate limiter's store (Redis) stood in for by one that fails on demand (the model
tier kills a real one: tests/test_replicas.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fimgate.gateway.limits import Limits
from fimgate.gateway.ratelimit import Decision, MemoryRateLimiter
from tests.fast_app import FastApp, fast_app

pytestmark = [pytest.mark.fast, pytest.mark.anyio]

BODY = {"model": "codestral-latest", "prompt": "def add(a, b):\n    ", "suffix": "\n"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FailingLimiter(MemoryRateLimiter):
    """The in-process limiter, whose calls named in ``failing`` raise as a lost Redis would."""

    def __init__(self, clock: object) -> None:
        super().__init__(clock=clock)  # type: ignore[arg-type]
        self.failing: set[str] = set()

    def _maybe_fail(self, call: str) -> None:
        if call in self.failing:
            raise ConnectionRefusedError(f"{call}: the limiter's store is gone")

    async def admit(self, bucket: str, limits: Limits, request_id: str, tokens: int) -> Decision:
        self._maybe_fail("admit")
        return await super().admit(bucket, limits, request_id, tokens)

    async def peek(self, bucket: str, limits: Limits) -> Decision:
        self._maybe_fail("peek")
        return await super().peek(bucket, limits)

    async def settle(self, bucket: str, request_id: str, tokens: int) -> None:
        self._maybe_fail("settle")
        await super().settle(bucket, request_id, tokens)

    async def ping(self) -> None:
        self._maybe_fail("ping")


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[FastApp]:
    async with fast_app(tmp_path, n_ctx=256) as app:
        app.gateway.limiter = FailingLimiter(app.clock)
        yield app


def _break(fast: FastApp, sql: str) -> None:
    with sqlite3.connect(fast.gateway.database.engine.url.database or "") as db:
        db.execute(sql)


async def test_a_limiter_that_fails_refuses_with_a_503(fast: FastApp) -> None:
    fast.gateway.limiter.failing.add("admit")  # type: ignore[attr-defined]
    response = await fast.post(BODY)
    assert response.status_code == 503 and "rate limiter" in response.json()["message"]
    assert [r.status for r in fast.rows()] == [503]


async def test_a_reservation_that_cannot_be_settled_stands_and_the_answer_goes(
    fast: FastApp,
) -> None:
    fast.gateway.limiter.failing.add("settle")  # type: ignore[attr-defined]
    assert (await fast.post(BODY)).status_code == 200
    assert [r.status for r in fast.rows()] == [200]


async def test_a_refusal_without_the_window_has_no_limit_headers(fast: FastApp) -> None:
    fast.gateway.limiter.failing.add("peek")  # type: ignore[attr-defined]
    response = await fast.post({**BODY, "prompt": "x = 1\n" * 60})
    assert response.status_code == 400
    assert "x-ratelimit-remaining-requests" not in response.headers


async def test_a_lost_limiter_makes_the_server_not_ready(fast: FastApp) -> None:
    fast.gateway.limiter.failing.add("ping")  # type: ignore[attr-defined]
    ready = await fast.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["rate_limiter"].startswith("unreachable")


async def test_limits_that_cannot_be_read_refuse_with_a_503(fast: FastApp) -> None:
    _break(fast, "DROP TABLE rate_limits")
    response = await fast.post(BODY)
    assert response.status_code == 503 and "limits store" in response.json()["message"]
    context = await fast.post({**BODY, "prompt": "x = 1\n" * 60})
    assert context.status_code == 400  # refused anyway: no window to report
    assert "x-ratelimit-remaining-requests" not in context.headers


async def test_keys_that_cannot_be_read_refuse_with_a_503(fast: FastApp) -> None:
    _break(fast, "DROP TABLE api_keys")
    response = await fast.post(BODY)
    assert response.status_code == 503 and "key store" in response.json()["message"]
