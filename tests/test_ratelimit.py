"""The sliding-log limiter, in memory and in a real Redis: exact counts, no window-edge
burst, tokens settled to what was used, one budget across replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

from fimgate.gateway.limits import Limits
from fimgate.gateway.ratelimit import MemoryRateLimiter, RateLimiter
from fimgate.gateway.ratelimit_redis import RedisRateLimiter

WINDOW = 1.0  # seconds; the server uses 60, the algorithm is the same


class Replicas:
    """Makes limiters that share one budget, inside the test's event loop."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.prefix = f"test{uuid.uuid4().hex}"
        self.made: list[RateLimiter] = []
        self.memory = MemoryRateLimiter(window=WINDOW)

    def new(self) -> RateLimiter:
        if self.redis_url is None:
            return self.memory  # one process: every "replica" is the same object
        limiter = RedisRateLimiter(self.redis_url, window=WINDOW, prefix=self.prefix)
        self.made.append(limiter)
        return limiter

    def run(self, test: Callable[[Replicas], Awaitable[object]]) -> object:
        async def body() -> object:
            try:
                return await test(self)
            finally:
                for limiter in self.made:
                    await limiter.aclose()

        return asyncio.run(body())


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.fast), "redis"])
def replicas(request: pytest.FixtureRequest) -> Replicas:
    if request.param == "memory":
        return Replicas(None)
    return Replicas(request.getfixturevalue("redis_server").url())


async def _admit_many(limiters: list[RateLimiter], n: int, limits: Limits, tokens: int):
    return await asyncio.gather(
        *(limiters[i % len(limiters)].admit("b", limits, f"r{i}", tokens) for i in range(n))
    )


def test_exactly_rpm_admitted_under_concurrency(replicas: Replicas) -> None:
    async def run(r: Replicas):
        return await _admit_many([r.new()], 15, Limits(rpm=10, tpm=10**6), 1)

    decisions = replicas.run(run)
    allowed = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert len(allowed) == 10 and len(refused) == 5
    assert all(d.exceeded == "requests" and 0 < d.retry_after <= WINDOW for d in refused)
    assert sorted(d.remaining_requests for d in allowed) == list(range(10))


def test_tokens_are_reserved_then_settled(replicas: Replicas) -> None:
    limits = Limits(rpm=100, tpm=100)

    async def run(r: Replicas):
        limiter = r.new()
        first = [await limiter.admit("b", limits, f"r{i}", 30) for i in range(4)]
        assert [d.allowed for d in first] == [True, True, True, False]
        assert first[3].exceeded == "tokens" and first[2].remaining_tokens == 10
        # Each really used 10: settling frees the rest of the reservations at once.
        for i in range(3):
            await limiter.settle("b", f"r{i}", 10)
        again = await limiter.admit("b", limits, "r9", 70)
        assert again.allowed and again.remaining_tokens == 0

    replicas.run(run)


def test_no_double_burst_at_a_window_edge(replicas: Replicas) -> None:
    limits = Limits(rpm=5, tpm=10**6)

    async def run(r: Replicas):
        limiter = r.new()
        start = time.monotonic()
        for i in range(3):
            assert (await limiter.admit("b", limits, f"a{i}", 1)).allowed
        await asyncio.sleep(WINDOW / 2)
        for i in range(2):
            assert (await limiter.admit("b", limits, f"b{i}", 1)).allowed
        refused = await limiter.admit("b", limits, "c", 1)
        assert not refused.allowed
        # Just past the first requests' minute: they have left, the later two have not. A
        # fixed window would hand out a whole new budget of 5 here.
        await asyncio.sleep(max(0.0, start + WINDOW + 0.1 - time.monotonic()))
        later = [await limiter.admit("b", limits, f"d{i}", 1) for i in range(4)]
        assert [d.allowed for d in later] == [True, True, True, False]

    replicas.run(run)


def test_retry_after_is_when_room_frees(replicas: Replicas) -> None:
    limits = Limits(rpm=2, tpm=10**6)

    async def run(r: Replicas):
        limiter = r.new()
        await limiter.admit("b", limits, "r1", 1)
        await limiter.admit("b", limits, "r2", 1)
        refused = await limiter.admit("b", limits, "r3", 1)
        assert not refused.allowed
        await asyncio.sleep(refused.retry_after + 0.05)
        assert (await limiter.admit("b", limits, "r4", 1)).allowed

    replicas.run(run)


def test_replicas_share_one_budget(replicas: Replicas) -> None:
    async def run(r: Replicas):
        return await _admit_many([r.new(), r.new()], 40, Limits(rpm=20, tpm=10**6), 1)

    assert sum(d.allowed for d in replicas.run(run)) == 20  # type: ignore[union-attr]


def test_peek_reports_without_admitting(replicas: Replicas) -> None:
    limits = Limits(rpm=3, tpm=100)

    async def run(r: Replicas):
        limiter = r.new()
        await limiter.admit("b", limits, "r1", 40)
        seen = [await limiter.peek("b", limits) for _ in range(5)]
        assert all(d.allowed and d.remaining_requests == 2 for d in seen)
        assert seen[-1].remaining_tokens == 60 and 0 < seen[-1].reset_requests <= WINDOW
        assert (await limiter.admit("b", limits, "r2", 60)).allowed  # peeks took nothing

    replicas.run(run)
