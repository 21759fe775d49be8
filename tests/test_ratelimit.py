"""The sliding-log limiter, in memory and in a real Redis: exact counts, no window-edge
burst, tokens settled to what was used, one budget across replicas.

Time is a clock the test moves by hand (both backends take one), so nothing sleeps, the
window is the server's real minute, and every wait is checked to the instant room frees.
One test runs Redis on its own clock, as the server does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as redis

from fimgate.gateway.limits import Limits
from fimgate.gateway.ratelimit import WINDOW_SECONDS, Decision, MemoryRateLimiter, RateLimiter
from fimgate.gateway.ratelimit_redis import RedisRateLimiter
from tests.clock import Clock
from tests.services import RedisServer

T = TypeVar("T")

WINDOW = WINDOW_SECONDS  # the server's minute: waiting it out costs nothing on this clock


class Backend:
    """Makes limiters on one manual clock inside the test's event loop, and closes them."""

    def __init__(self, redis_url: str | None) -> None:
        self.redis_url = redis_url
        self.prefix = f"test{uuid.uuid4().hex}"
        self.clock = Clock()
        self.made: list[RateLimiter] = []

    def new(self) -> RateLimiter:
        """A limiter: in memory, a budget of its own (one process's); in Redis, one more
        client (one more replica) on this test's shared budget."""
        if self.redis_url is None:
            return MemoryRateLimiter(window=WINDOW, clock=self.clock)
        limiter = RedisRateLimiter(
            self.redis_url, window=WINDOW, prefix=self.prefix, clock=self.clock
        )
        self.made.append(limiter)
        return limiter

    def run(self, test: Callable[[Backend], Awaitable[T]]) -> T:
        async def body() -> T:
            try:
                return await test(self)
            finally:
                for limiter in self.made:
                    await limiter.aclose()

        return asyncio.run(body())


@pytest.fixture(params=[pytest.param("memory", marks=pytest.mark.fast), "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend(None)
    return Backend(request.getfixturevalue("redis_server").url())


async def _admit_many(
    limiters: list[RateLimiter], n: int, limits: Limits, tokens: int
) -> list[Decision]:
    return await asyncio.gather(
        *(limiters[i % len(limiters)].admit("b", limits, f"r{i}", tokens) for i in range(n))
    )


def test_exactly_rpm_admitted_under_concurrency(backend: Backend) -> None:
    async def run(b: Backend) -> list[Decision]:
        return await _admit_many([b.new()], 15, Limits(rpm=10, tpm=10**6), 1)

    decisions = backend.run(run)
    allowed = [d for d in decisions if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert len(allowed) == 10 and len(refused) == 5
    assert sorted(d.remaining_requests for d in allowed) == list(range(10))
    # All came at one instant: room frees when the first of them leaves, a window on.
    for d in refused:
        assert (d.exceeded, d.retry_after, d.remaining_requests) == ("requests", WINDOW, 0)
        assert d.retry_after_seconds == 60
    assert all(d.reset_requests == WINDOW for d in decisions)


def test_tokens_are_reserved_then_settled(backend: Backend) -> None:
    limits = Limits(rpm=100, tpm=100)

    async def run(b: Backend) -> None:
        limiter, clock = b.new(), b.clock
        first = [await limiter.admit("b", limits, "r0", 30)]  # at 0 s
        clock.advance(10)
        first.append(await limiter.admit("b", limits, "r1", 30))  # at 10 s
        clock.advance(10)
        first += [await limiter.admit("b", limits, f"r{i}", 30) for i in (2, 3)]  # at 20 s
        assert [d.allowed for d in first] == [True, True, True, False]
        assert [d.remaining_tokens for d in first] == [70, 40, 10, 10]
        # 90 reserved: 30 more fit once r0's 30 leave, a window after it came.
        assert (first[3].exceeded, first[3].retry_after) == ("tokens", WINDOW - 20)
        # Each really used 10: settling frees the rest of the reservations at once.
        for i in range(3):
            await limiter.settle("b", f"r{i}", 10)
        clock.advance(5)
        again = await limiter.admit("b", limits, "r9", 70)  # at 25 s
        assert again.allowed and again.remaining_tokens == 0
        # What leaves the window is what was settled, not what was reserved: 25 more need
        # r0, r1 and r2 (10 each) gone, the last of them a window after 20 s.
        short = await limiter.admit("b", limits, "r10", 25)
        assert (short.allowed, short.exceeded, short.retry_after) == (False, "tokens", 55)
        clock.advance(WINDOW - 5 - 0.5)  # r0 and r1 have left: 80 in use
        assert (await limiter.admit("b", limits, "r11", 25)).retry_after == 0.5
        clock.advance(0.5)  # r2 leaves; r9's 70 stay
        fits = await limiter.admit("b", limits, "r12", 25)
        assert fits.allowed and fits.remaining_tokens == 100 - 70 - 25

    backend.run(run)


def test_no_double_burst_at_a_window_edge(backend: Backend) -> None:
    limits = Limits(rpm=5, tpm=10**6)

    async def run(b: Backend) -> None:
        limiter, clock = b.new(), b.clock
        for i in range(3):
            assert (await limiter.admit("b", limits, f"a{i}", 1)).allowed
        clock.advance(WINDOW / 2)
        for i in range(2):
            assert (await limiter.admit("b", limits, f"b{i}", 1)).allowed
        refused = await limiter.admit("b", limits, "c0", 1)
        assert (refused.allowed, refused.retry_after) == (False, WINDOW / 2)
        clock.advance(WINDOW / 2 - 1)  # a second before the first requests' minute is up
        assert (await limiter.admit("b", limits, "c1", 1)).retry_after == 1
        clock.advance(1)
        # Their minute is up: they have left, the later two have not. A fixed window would
        # hand out a whole new budget of 5 here.
        later = [await limiter.admit("b", limits, f"d{i}", 1) for i in range(4)]
        assert [d.allowed for d in later] == [True, True, True, False]
        assert (later[3].exceeded, later[3].retry_after) == ("requests", WINDOW / 2)

    backend.run(run)


def test_retry_after_is_when_room_frees(backend: Backend) -> None:
    async def run(b: Backend) -> None:
        limiter, clock = b.new(), b.clock
        limits = Limits(rpm=2, tpm=10**6)
        await limiter.admit("b", limits, "r1", 1)
        clock.advance(10)
        await limiter.admit("b", limits, "r2", 1)
        refused = await limiter.admit("b", limits, "r3", 1)
        assert (refused.allowed, refused.exceeded) == (False, "requests")
        assert refused.retry_after == WINDOW - 10 and refused.retry_after_seconds == 50
        clock.advance(refused.retry_after - 0.25)  # not yet
        early = await limiter.admit("b", limits, "r4", 1)
        assert not early.allowed and early.retry_after == 0.25
        assert early.retry_after_seconds == 1  # the header rounds up: never too early
        clock.advance(0.25)  # exactly when it said
        assert (await limiter.admit("b", limits, "r5", 1)).allowed
        assert (await limiter.admit("b", limits, "r6", 1)).retry_after == 10  # r2's turn

        # Both limits in the way: the later of the two waits is the one that counts.
        both = Limits(rpm=2, tpm=100)
        await limiter.admit("c", both, "x1", 10)
        clock.advance(10)
        await limiter.admit("c", both, "x2", 80)
        refused = await limiter.admit("c", both, "x3", 30)  # a request in 50 s, tokens in 60
        assert (refused.exceeded, refused.retry_after) == ("tokens", WINDOW)
        clock.advance(WINDOW - 0.5)
        early = await limiter.admit("c", both, "x4", 30)
        assert (early.allowed, early.exceeded, early.retry_after) == (False, "tokens", 0.5)
        clock.advance(0.5)
        assert (await limiter.admit("c", both, "x5", 30)).allowed

    backend.run(run)


def test_peek_reports_without_admitting(backend: Backend) -> None:
    limits = Limits(rpm=3, tpm=100)

    async def run(b: Backend) -> None:
        limiter, clock = b.new(), b.clock
        empty = await limiter.peek("b", limits)
        assert (empty.remaining_requests, empty.remaining_tokens, empty.reset_requests) == (
            3,
            100,
            0,
        )
        await limiter.admit("b", limits, "r1", 40)
        clock.advance(15)
        seen = [await limiter.peek("b", limits) for _ in range(5)]
        for d in seen:
            assert d.allowed and (d.remaining_requests, d.remaining_tokens) == (2, 60)
            assert d.reset_requests == d.reset_tokens == WINDOW - 15
            assert (d.retry_after, d.exceeded) == (0, None)
        assert (await limiter.admit("b", limits, "r2", 60)).allowed  # peeks took nothing
        full = await limiter.peek("b", limits)  # refuses nothing either: it only reports
        assert full.allowed and (full.remaining_requests, full.remaining_tokens) == (1, 0)
        assert full.reset_requests == WINDOW

    backend.run(run)


# Replicas: Redis only. In memory each process has a budget of its own (that is what the
# memory backend is), and two gateways inside one process would share one MemoryRateLimiter
# object, which is no sharing to test. In Redis each RedisRateLimiter below is a client of
# its own (its own connections), as two gateway replicas are; they share the manual clock as
# replicas share Redis's.
def test_replicas_share_one_budget(redis_server: RedisServer) -> None:
    async def run(b: Backend) -> None:
        one, two = b.new(), b.new()
        decisions = await _admit_many([one, two], 40, Limits(rpm=20, tpm=10**6), 1)
        assert sum(d.allowed for d in decisions) == 20
        assert all(d.retry_after == WINDOW for d in decisions if not d.allowed)
        assert (await two.peek("b", Limits(rpm=20, tpm=10**6))).remaining_requests == 0
        # A reservation made through one replica and settled through it frees tokens for
        # the other.
        limits = Limits(rpm=100, tpm=100)
        assert (await one.admit("t", limits, "big", 100)).allowed
        assert (await two.admit("t", limits, "next", 90)).exceeded == "tokens"
        await one.settle("t", "big", 10)
        assert (await two.admit("t", limits, "next", 90)).allowed

    Backend(redis_server.url()).run(run)


async def _redis_time(client: redis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1e6  # as the script reads it


def test_redis_without_a_clock_uses_its_own_time(redis_server: RedisServer) -> None:
    """The server's path: no clock given, the script stamps and measures by Redis's TIME.
    Bracketed by TIME read before and after, so no bound on how long the calls take; the
    window is a day so that no stall between them could empty it."""
    day = 86400.0
    limits = Limits(rpm=1, tpm=10**6)

    async def run() -> None:
        raw = redis.Redis.from_url(redis_server.url())
        limiter = RedisRateLimiter(redis_server.url(), window=day, prefix=uuid.uuid4().hex)
        try:
            before = await _redis_time(raw)
            assert (await limiter.admit("b", limits, "r1", 1)).allowed
            after = await _redis_time(raw)
            stamped = await raw.zscore(limiter._keys("b")[0], "r1")
            assert stamped is not None and before <= stamped <= after
            refused = await limiter.admit("b", limits, "r2", 1)
            later = await _redis_time(raw)
            assert (refused.allowed, refused.exceeded) == (False, "requests")
            # The script reports times to 14 digits: a microsecond of slack.
            assert stamped + day - later - 1e-6 <= refused.retry_after
            assert refused.retry_after <= stamped + day - after + 1e-6
        finally:
            await limiter.aclose()
            await raw.aclose()

    asyncio.run(run())
