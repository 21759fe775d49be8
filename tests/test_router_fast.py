"""The router (fimgate/engines/router.py) over fake upstreams: affinity and bounded load,
failover, ejection and recovery, drain, and the hand-off of a cancelled request's turn.

``FakeUpstream`` stands in for a llama.cpp server over HTTP (``LlamaCppServer``): its
health, its ``/slots``, its tokenizer and its streamed completions, each one a value or an
event the test sets. The model tier (tests/test_upstreams.py) runs the real thing: three
llama.cpp servers behind one gateway.

The router checks its upstreams' health in the background from the moment it first serves:
the first check at once, the next ones ``interval`` seconds later (an hour here, unless a
test says otherwise). ``serving`` lets that first check end before a test begins, so the
checks a test makes (``check_health()``) are the only ones it meets. Nothing here waits on
the clock: ``until`` yields to the event loop until what it waits for has happened, and
events sequence the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fimgate.engines import router as router_module
from fimgate.engines.base import EngineError, GenerationLost
from fimgate.engines.router import Router, Upstream
from fimgate.engines.sessions import Turn
from fimgate.engines.transports.base import Capabilities, Chunk, Route, Sampling
from fimgate.engines.transports.http_upstream import UpstreamUnavailable

pytestmark = pytest.mark.fast

IDS = [1, 2, 3]
SAMPLING = Sampling(n_predict=8)
VOCABULARY = {"<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|file_sep|>": 151664}
NEVER = 3600.0  # a health-check interval no test outlives


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeUpstream:
    """A llama.cpp server over HTTP, as the router sees it (see the module's docstring).

    Its completion is ``texts``, one chunk each: "from " and its URL. ``gates[i]``, where
    set, is waited on before chunk ``i``; ``fail_at``: an ``UpstreamUnavailable`` (the
    connection broke, HTTP 5xx) before chunk ``fail_at``; ``error``: raised before the first
    chunk (a request the server refused). ``busy`` is what ``/slots`` says (None: no slots
    endpoint; an exception: raised)."""

    def __init__(
        self,
        url: str,
        *,
        slots: int | None = 4,
        context_length: int = 4096,
        grammar: bool = True,
        time_bound: bool = True,
        vocabulary: dict[str, int] | None = None,
    ) -> None:
        self.url = url
        self.slots = slots
        self.capabilities = Capabilities(grammar=grammar, time_bound=time_bound)
        self.context_length = context_length
        self.vocabulary = dict(VOCABULARY if vocabulary is None else vocabulary)
        self.vocabulary_error: Exception | None = None
        self.texts = ["from ", url]
        self.gates: dict[int, asyncio.Event] = {}
        self.fail_at: int | None = None
        self.error: Exception | None = None
        self.alive = True
        self.busy: int | Exception | None = 0
        self.tokenize_error: Exception | None = None
        # What it was asked.
        self.calls = 0
        self.runs_closed = 0
        self.samplings: list[Sampling] = []
        self.health_calls = 0
        self.busy_calls = 0
        self.tokenize_calls = 0
        self.closed = 0

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        if not text:  # as llama.cpp's tokenizer client: nothing asked
            return []
        self.tokenize_calls += 1
        if self.tokenize_error is not None:
            raise self.tokenize_error
        return [(ord(c), c) for c in text] if pieces else [ord(c) for c in text]

    def special_token(self, marker: str) -> int | None:
        if self.vocabulary_error is not None:
            raise self.vocabulary_error
        return self.vocabulary.get(marker)

    def bos_token(self) -> str | None:
        return None

    async def health(self, timeout: float) -> bool:
        self.health_calls += 1
        return self.alive

    async def busy_slots(self) -> int | None:
        self.busy_calls += 1
        if isinstance(self.busy, Exception):
            raise self.busy
        return self.busy

    async def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]:
        self.calls += 1
        self.samplings.append(sampling)
        try:
            for n, text in enumerate(self.texts):
                if n in self.gates:
                    await self.gates[n].wait()
                if n == 0 and self.error is not None:
                    raise self.error
                if n == self.fail_at:
                    raise UpstreamUnavailable(f"{self.url}: connection reset")
                last = n == len(self.texts) - 1
                yield Chunk(text, n + 1, "stop" if last else None)
        finally:
            self.runs_closed += 1

    def stats(self) -> dict[str, int]:
        return {"requests": self.calls, "generated_tokens": 2 * self.calls}

    def upstreams(self) -> list[dict[str, object]]:
        return []

    async def aclose(self) -> None:
        self.closed += 1


class Opener:
    """Reaches a fake's server: refused while ``reachable`` is false."""

    def __init__(self, fake: FakeUpstream, reachable: bool = True) -> None:
        self.fake, self.reachable = fake, reachable

    def __call__(self) -> FakeUpstream:
        if not self.reachable:
            raise ConnectionError(f"{self.fake.url}: connection refused")
        return self.fake


def upstream(
    fake: FakeUpstream, weight: float = 1.0, draining: bool = False, reachable: bool = True
) -> Upstream:
    return Upstream(
        fake.url, Opener(fake, reachable), fake.capabilities, weight=weight, draining=draining
    )


def fakes(n: int, **options: Any) -> list[FakeUpstream]:
    return [FakeUpstream(f"http://gpu{i}:8080", **options) for i in range(n)]


@contextlib.asynccontextmanager
async def serving(*upstreams: Upstream | FakeUpstream, **options: Any) -> AsyncIterator[Router]:
    pool = [u if isinstance(u, Upstream) else upstream(u) for u in upstreams]
    router = Router(pool, **{"interval": NEVER, **options})
    # The test's own checks take turns with the background ones, as those do with each other.
    lock, check = asyncio.Lock(), router.check_health

    async def check_health() -> None:
        async with lock:
            await check()

    router.check_health = check_health  # type: ignore[method-assign]
    try:
        await router.tokenize("")  # the router starts checking in the background
        await router.check_health()  # after the first background check, which holds the lock
        yield router
    finally:
        await close(router)


async def answer(
    router: Router, affinity: str = "", turn: Turn | None = None, sampling: Sampling = SAMPLING
) -> str:
    route = Route(affinity, turn or Turn())
    return "".join([chunk.text async for chunk in router.run(IDS, sampling, route)])


async def served_by(router: Router, affinity: str) -> str:
    return (await answer(router, affinity)).removeprefix("from ")


def key_for(router: Router, url: str) -> str:
    """An affinity key that ranks ``url`` first among the upstreams taking work."""
    ready = [u for u in router.pool if u.healthy and not u.draining]
    for i in range(1000):
        key = f"key-{i}/editor:src/main.py"
        if max(ready, key=lambda u: u.score(key)).url == url:
            return key
    raise AssertionError(f"no key lands on {url}")


async def until(condition: Callable[[], bool], turns: int = 1_000_000) -> None:
    """Yield to the event loop until ``condition`` holds. What a test waits for here comes
    within a few turns of the loop, or one of the router's pauses (10 to 25 ms, a few thousand
    turns); ``turns`` only ends a wait for what never comes (seconds), as a failure."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def close(router: Router) -> None:
    """``router.aclose()``, which ends within a few turns of the loop (else a failure)."""
    closing = asyncio.ensure_future(router.aclose())
    await until(closing.done)
    await closing


def row(router: Router, url: str) -> dict[str, object]:
    return next(u for u in router.upstreams() if u["url"] == url)


async def cancel_after_first_chunk(router: Router, affinity: str, turn: Turn) -> None:
    """Read a run's first chunk, then leave, as a client that went away does."""
    async with contextlib.aclosing(router.run(IDS, SAMPLING, Route(affinity, turn))) as chunks:
        async for chunk in chunks:
            assert chunk.text == "from "
            assert turn.held
            break


# -- affinity and load --------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_same_key_always_lands_on_the_same_upstream() -> None:
    pool = fakes(3)
    async with serving(*pool) as router:
        where = {await served_by(router, "alice:src/app.py") for _ in range(10)}
        assert len(where) == 1
        assert sorted(f.calls for f in pool) == [0, 0, 10]
        (url,) = where
    # Rendezvous hashing ranks by URL, not by the order of the pool.
    async with serving(*reversed(fakes(3))) as router:
        assert await served_by(router, "alice:src/app.py") == url


@pytest.mark.anyio
async def test_different_keys_spread_over_the_upstreams() -> None:
    pool = fakes(3)
    async with serving(*pool) as router:
        for i in range(90):
            await answer(router, f"editor-{i}:main.py")
    assert sum(f.calls for f in pool) == 90
    assert all(f.calls >= 15 for f in pool), [f.calls for f in pool]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("weights", "low", "high"), [((1.0, 1.0), 0.4, 0.6), ((3.0, 1.0), 0.65, 0.85)]
)
async def test_weights_shift_the_share(
    weights: tuple[float, float], low: float, high: float
) -> None:
    heavy, light = fakes(2)
    pool = [upstream(heavy, weights[0]), upstream(light, weights[1])]
    async with serving(*pool) as router:
        for i in range(400):
            await answer(router, f"editor-{i}:main.py")
    assert heavy.calls + light.calls == 400
    assert low <= heavy.calls / 400 <= high, (heavy.calls, light.calls)


@pytest.mark.anyio
async def test_keys_stay_where_they_were_when_an_upstream_leaves() -> None:
    pool = fakes(3)
    keys = [f"editor-{i}:main.py" for i in range(60)]
    async with serving(*pool) as router:
        before = {key: await served_by(router, key) for key in keys}
        gone = pool[2].url
        assert gone in before.values()
        pool[2].alive = False
        await router.check_health()
        after = {key: await served_by(router, key) for key in keys}
    assert gone not in after.values()
    assert {k: u for k, u in after.items() if before[k] != gone} == {
        k: u for k, u in before.items() if u != gone
    }


@pytest.mark.anyio
@pytest.mark.parametrize(("slots", "passed_over"), [(1, True), (None, True), (4, False)])
async def test_a_busy_upstream_over_its_share_is_passed_over(
    slots: int | None, passed_over: bool
) -> None:
    """Two requests in flight on one of two upstreams are over its share (2 of 3): with all
    its slots busy the third goes to the other; with a slot free it stays (a cold prompt read
    elsewhere costs more than sharing the batch)."""
    a, b = fakes(2, slots=slots)
    a.gates[0] = asyncio.Event()
    async with serving(a, b) as router:
        key = key_for(router, a.url)
        waiting = [asyncio.create_task(answer(router, key)) for _ in range(2)]
        await until(lambda: a.calls == 2)
        assert row(router, a.url)["in_flight"] == 2
        third = asyncio.create_task(answer(router, key))
        await until(lambda: a.calls + b.calls == 3)
        assert (a.calls, b.calls) == ((2, 1) if passed_over else (3, 0))
        a.gates[0].set()
        assert set(await asyncio.gather(*waiting)) == {f"from {a.url}"}
        assert await third == f"from {b.url if passed_over else a.url}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "affinity"), [("round-robin", "alice:main.py"), ("affinity", "")]
)
async def test_without_affinity_requests_take_turns(policy: str, affinity: str) -> None:
    pool = fakes(3)
    async with serving(*pool, policy=policy) as router:
        for _ in range(6):
            await answer(router, affinity)
        assert [f.calls for f in pool] == [2, 2, 2]
        # Requests in flight at once go to the least busy.
        for fake in pool:
            fake.gates[0] = asyncio.Event()
        waiting = [asyncio.create_task(answer(router, affinity)) for _ in range(3)]
        await until(lambda: sum(f.calls for f in pool) == 9)
        assert [f.calls for f in pool] == [3, 3, 3]
        for fake in pool:
            fake.gates[0].set()
        assert sorted(await asyncio.gather(*waiting)) == sorted(f"from {f.url}" for f in pool)
        # While one is busy, the others take turns and it takes nothing new.
        gate = asyncio.Event()
        for fake in pool:
            fake.gates[0] = gate
        hung = asyncio.create_task(answer(router, affinity))
        await until(lambda: sum(f.calls for f in pool) == 10)
        (busy,) = [f for f in pool if f.calls == 4]
        for fake in pool:
            if fake is not busy:
                del fake.gates[0]
        for _ in range(4):
            sent = asyncio.create_task(answer(router, affinity))
            await until(lambda sent=sent: sent.done() or busy.calls > 4)
            assert busy.calls == 4, "a request went to the busy upstream"
        assert sorted(f.calls for f in pool) == [4, 5, 5]
        gate.set()
        assert await hung == f"from {busy.url}"


@pytest.mark.anyio
async def test_round_robin_weighs_the_load_by_weight() -> None:
    heavy, light = fakes(2)
    heavy.gates[0] = light.gates[0] = asyncio.Event()
    pool = [upstream(heavy, 2.0), upstream(light, 1.0)]
    async with serving(*pool, policy="round-robin") as router:
        waiting = [asyncio.create_task(answer(router)) for _ in range(3)]
        await until(lambda: heavy.calls + light.calls == 3)
        assert (heavy.calls, light.calls) == (2, 1)
        heavy.gates[0].set()
        await asyncio.gather(*waiting)


def test_a_router_needs_upstreams_and_a_known_policy() -> None:
    with pytest.raises(EngineError, match="no upstream"):
        Router([])
    with pytest.raises(EngineError, match="unknown routing policy"):
        Router([upstream(FakeUpstream("http://gpu0:8080"))], policy="random")


# -- failover -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_failure_before_the_first_chunk_is_retried_elsewhere() -> None:
    a, b = fakes(2)
    async with serving(a, b) as router:
        a.fail_at, a.alive = 0, False  # a server gone: its health says so too
        key = key_for(router, a.url)
        turn = Turn()
        assert await answer(router, key, turn) == f"from {b.url}"
        assert (a.calls, b.calls, a.runs_closed) == (1, 1, 1)
        assert not turn.held and not turn.stopping
        assert row(router, a.url)["healthy"] is False
        assert row(router, a.url)["in_flight"] == 0
        assert router.stats()["retried"] == 1
        assert router.stats()["ejected"] == 1
        # The next request with that key goes straight to the other one.
        assert await answer(router, key) == f"from {b.url}"
        assert a.calls == 1
        assert router.stats()["retried"] == 1


@pytest.mark.anyio
async def test_a_failure_after_the_first_chunk_ends_the_stream() -> None:
    a, b = fakes(2)
    a.fail_at = 1
    async with serving(a, b) as router:
        turn = Turn()
        got: list[str] = []
        with pytest.raises(GenerationLost, match="connection reset"):
            async for chunk in router.run(IDS, SAMPLING, Route(key_for(router, a.url), turn)):
                got.append(chunk.text)
        assert got == ["from "]
        assert b.calls == 0
        assert router.stats()["retried"] == 0
        assert router.stats()["ejected"] == 1
        assert not turn.held and not turn.stopping


@pytest.mark.anyio
async def test_a_refused_request_is_not_retried() -> None:
    """The request's fault (an HTTP 400) is no upstream's: nothing is ejected or retried."""
    a, b = fakes(2)
    a.error = EngineError(f"{a.url}: HTTP 400: prompt too long")
    async with serving(a, b) as router:
        turn = Turn()
        with pytest.raises(EngineError, match="HTTP 400") as raised:
            await answer(router, key_for(router, a.url), turn)
        assert not isinstance(raised.value, UpstreamUnavailable)
        assert b.calls == 0
        assert row(router, a.url)["healthy"] is True
        assert router.stats()["retried"] == router.stats()["ejected"] == 0
        await turn.let_go_of()


@pytest.mark.anyio
async def test_a_hung_upstream_is_given_up_once_ejected() -> None:
    a, b = fakes(2)
    a.gates[0] = asyncio.Event()  # never set: it hangs before its first token
    async with serving(a, b) as router:
        turn = Turn()
        waiting = asyncio.create_task(answer(router, key_for(router, a.url), turn))
        await until(lambda: a.calls == 1)
        assert not waiting.done() and b.calls == 0
        a.alive = False
        await router.check_health()
        assert await waiting == f"from {b.url}"
        assert a.runs_closed == 1  # its connection is closed
        assert router.stats()["retried"] == 1
        assert router.stats()["ejected"] == 1
        assert not turn.held


@pytest.mark.anyio
async def test_an_ejection_does_not_cut_a_stream_that_flows() -> None:
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()
    async with serving(a, b) as router:
        chunks = router.run(IDS, SAMPLING, Route(key_for(router, a.url)))
        assert (await anext(chunks)).text == "from "
        a.alive = False
        await router.check_health()
        assert row(router, a.url)["healthy"] is False
        a.gates[1].set()
        assert [chunk.text async for chunk in chunks] == [a.url]
        assert b.calls == 0
        assert router.stats()["retried"] == 0


@pytest.mark.anyio
async def test_a_stream_whose_upstream_goes_silent_is_lost_once_ejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After its first token, an upstream frozen mid-stream (the health check ejects it)
    loses the generation once it has sent nothing for the grace, and is not waited on for
    the whole stall bound."""
    monkeypatch.setattr(router_module, "EJECTED_GRACE_S", 0.01)
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()  # never set: silent after its first token
    async with serving(a, b, stall=NEVER) as router:
        chunks = router.run(IDS, SAMPLING, Route(key_for(router, a.url)))
        assert (await anext(chunks)).text == "from "
        a.alive = False
        await router.check_health()
        with pytest.raises(GenerationLost, match="ejected and sent nothing"):
            await anext(chunks)
        assert a.runs_closed == 1 and b.calls == 0  # its connection closed; not sent again


@pytest.mark.anyio
async def test_a_stream_silent_past_the_stall_bound_is_lost_and_its_upstream_ejected() -> None:
    """One that still answers its health check but sends nothing for ``stall`` seconds."""
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()
    async with serving(a, b, stall=0.05) as router:
        chunks = router.run(IDS, SAMPLING, Route(key_for(router, a.url)))
        assert (await anext(chunks)).text == "from "
        with pytest.raises(GenerationLost, match=r"sent nothing for 0\.05 s"):
            await anext(chunks)
        assert row(router, a.url)["healthy"] is False and router.stats()["ejected"] == 1
        # The next request goes elsewhere.
        assert await answer(router, key_for(router, b.url)) == f"from {b.url}"


@pytest.mark.anyio
async def test_no_healthy_upstream_left_raises() -> None:
    pool = fakes(2)
    async with serving(*pool) as router:
        for fake in pool:
            fake.fail_at, fake.alive = 0, False
        with pytest.raises(UpstreamUnavailable, match=r"no healthy upstream left \(tried 2\)"):
            await answer(router, "alice:main.py")
        assert router.stats()["retried"] == 2
        assert router.stats()["ejected"] == 2
        with pytest.raises(UpstreamUnavailable, match=r"tried 0"):
            await answer(router, "alice:main.py")
        assert [f.calls for f in pool] == [1, 1]


@pytest.mark.anyio
async def test_a_request_cancelled_before_its_first_chunk() -> None:
    a, b = fakes(2)
    a.gates[0] = asyncio.Event()
    async with serving(a, b) as router:
        turn = Turn()
        waiting = asyncio.create_task(answer(router, key_for(router, a.url), turn))
        await until(lambda: a.calls == 1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert a.runs_closed == 1
        assert turn.stopping
        await turn.let_go_of()  # its slot is free (busy 0)
        assert row(router, a.url)["healthy"] is True
        assert row(router, a.url)["in_flight"] == 0
        assert b.calls == 0
        assert router.stats()["retried"] == 0


# -- health ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_health_checks_eject_and_take_back() -> None:
    a, b = fakes(2)
    async with serving(a, b) as router:
        key = key_for(router, a.url)
        a.alive = False
        await router.check_health()
        assert [u["healthy"] for u in router.upstreams()] == [False, True]
        assert router.stats()["ejected"] == 1
        assert await answer(router, key) == f"from {b.url}"
        await router.check_health()  # still down: ejected once
        assert router.stats()["ejected"] == 1
        a.alive = True
        await router.check_health()
        assert [u["healthy"] for u in router.upstreams()] == [True, True]
        assert router.stats()["recovered"] == 1
        assert await answer(router, key) == f"from {a.url}"
        assert a.calls == 1


@pytest.mark.anyio
async def test_health_is_checked_in_the_background() -> None:
    a, b = fakes(2)
    async with serving(a, b, interval=0) as router:
        await answer(router)  # the router starts checking when it first serves
        await until(lambda: a.health_calls >= 3)  # and goes on
        a.alive = False
        await until(lambda: row(router, a.url)["healthy"] is False)
        a.alive = True
        await until(lambda: row(router, a.url)["healthy"] is True)
        assert router.stats()["ejected"] == router.stats()["recovered"] == 1


@pytest.mark.anyio
async def test_an_upstream_down_at_start_joins_when_it_answers() -> None:
    a, b = fakes(2)
    late = upstream(b, reachable=False)
    async with serving(upstream(a), late) as router:
        assert [u["healthy"] for u in router.upstreams()] == [True, False]
        assert row(router, b.url)["requests"] == 0
        key = key_for(router, a.url)
        assert await answer(router, key) == f"from {a.url}"
        await router.check_health()  # still refused
        assert late.transport is None and not late.healthy
        assert router.stats()["ejected"] == 0  # it never was in
        late.opener.reachable = True  # type: ignore[attr-defined]
        await router.check_health()
        assert late.healthy
        assert router.stats()["recovered"] == 1
        assert await answer(router, key_for(router, b.url)) == f"from {b.url}"


def test_an_upstream_of_another_model_is_refused_at_start() -> None:
    a, b = fakes(2)
    b.vocabulary["<|fim_middle|>"] = 5
    with pytest.raises(EngineError, match=f"{b.url} runs another model"):
        Router([upstream(a), upstream(b)])


def test_nothing_reachable_at_start_is_an_error() -> None:
    pool = [upstream(fake, reachable=False) for fake in fakes(2)]
    with pytest.raises(EngineError, match=r"no upstream could be reached.*connection refused"):
        Router(pool)


@pytest.mark.anyio
@pytest.mark.parametrize("differs", ["vocabulary", "context"])
async def test_a_late_upstream_of_another_model_does_not_join(differs: str) -> None:
    a, b = fakes(2)
    if differs == "vocabulary":
        b.vocabulary["<|file_sep|>"] = 7
    else:
        b.context_length = a.context_length // 2
    late = upstream(b, reachable=False)
    async with serving(upstream(a), late) as router:
        late.opener.reachable = True  # type: ignore[attr-defined]
        await router.check_health()
        assert late.transport is None and not late.healthy
        assert router.context_length == a.context_length
        for i in range(20):
            assert await served_by(router, f"editor-{i}:main.py") == a.url


@pytest.mark.anyio
async def test_a_late_upstream_waits_while_the_reference_cannot_be_read() -> None:
    a, b = fakes(2)
    late = upstream(b, reachable=False)
    async with serving(upstream(a), late) as router:
        late.opener.reachable = True  # type: ignore[attr-defined]
        a.vocabulary_error = ConnectionError("reference gone")
        await router.check_health()
        assert not late.healthy
        a.vocabulary_error = None
        await router.check_health()
        assert late.healthy


def test_the_prompt_builder_asks_the_first_reached_upstream() -> None:
    a, b, c = fakes(3)
    b.context_length = 2048
    a.vocabulary = {}  # unreachable at start: never the reference
    router = Router([upstream(a, reachable=False), upstream(b), upstream(c)])
    assert router.context_length == 2048  # the smallest
    assert router.special_token("<|fim_prefix|>") == VOCABULARY["<|fim_prefix|>"]
    assert router.special_token("[SUFFIX]") is None
    assert router.bos_token() is None


# -- drain ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_draining_upstream_takes_no_new_requests_and_finishes_its_own() -> None:
    a, b = fakes(2)
    a.gates[0] = asyncio.Event()
    wanted = {a.url: (1.0, False)}  # b is not in the file: left as it is
    async with serving(a, upstream(b, weight=3.0), refresh=lambda: wanted) as router:
        wanted[a.url] = (0.5, False)
        assert row(router, a.url)["weight"] == 1.0  # until the next health check
        await router.check_health()
        assert row(router, a.url)["weight"] == 0.5
        key = key_for(router, a.url)
        waiting = asyncio.create_task(answer(router, key))
        await until(lambda: a.calls == 1)
        gate = a.gates.pop(0)  # the next ones would not wait, were they sent there
        wanted[a.url] = (2.0, True)
        await router.check_health()
        assert row(router, a.url) == {
            "url": a.url,
            "weight": 2.0,
            "healthy": True,
            "draining": True,
            "in_flight": 1,
            "requests": 1,
        }
        assert row(router, b.url)["weight"] == 3.0
        for i in range(20):
            assert await served_by(router, f"editor-{i}:main.py") == b.url
        assert await answer(router, key) == f"from {b.url}"
        assert a.calls == 1
        gate.set()
        assert await waiting == f"from {a.url}"  # the one in flight finishes there
        wanted[a.url] = (1.0, False)
        await router.check_health()
        assert await answer(router, key_for(router, a.url)) == f"from {a.url}"


@pytest.mark.anyio
async def test_an_upstream_draining_from_the_start_takes_nothing() -> None:
    a, b = fakes(2)
    async with serving(upstream(a, draining=True), b) as router:
        for i in range(10):
            assert await served_by(router, f"editor-{i}:main.py") == b.url
        assert await router.tokenize("ab") == [97, 98]
        assert a.calls == a.tokenize_calls == 0


# -- tokenizer, reports, capabilities ---------------------------------------------------------


@pytest.mark.anyio
async def test_tokenize_goes_to_a_healthy_upstream_and_fails_over() -> None:
    a, b = fakes(2)
    async with serving(a, b) as router:
        a.tokenize_error = UpstreamUnavailable(f"{a.url}: connection refused")
        a.alive = False
        # Without affinity the first pick alternates: within two calls one lands on a.
        assert await router.tokenize("hi") == [104, 105]
        assert await router.tokenize("hi", pieces=True) == [(104, "h"), (105, "i")]
        assert a.tokenize_calls == 1
        assert b.tokenize_calls == 2
        assert row(router, a.url)["healthy"] is False
        b.tokenize_error = EngineError("tokenizer unreachable")
        with pytest.raises(EngineError, match="no healthy upstream to tokenize with"):
            await router.tokenize("hi")


@pytest.mark.anyio
async def test_a_hung_tokenizer_is_given_up_once_ejected() -> None:
    a, b = fakes(2)
    hang = asyncio.Event()  # never set

    async def hung(text: str, pieces: bool = False) -> list[Any]:
        a.tokenize_calls += 1
        await hang.wait()
        return []

    async with serving(a, b) as router:
        a.tokenize = hung  # type: ignore[method-assign]
        b.alive = False
        await router.check_health()  # a is the one left to ask
        waiting = asyncio.create_task(router.tokenize("x"))
        await until(lambda: a.tokenize_calls == 1)
        b.alive, a.alive = True, False
        await router.check_health()
        assert await waiting == [ord("x")]
        assert b.tokenize_calls == 1
        assert router.stats()["recovered"] == 1


@pytest.mark.anyio
async def test_stats_sum_the_upstreams_counters() -> None:
    a, b, c = fakes(3)
    pool = [upstream(a), upstream(b), upstream(c, reachable=False)]
    async with serving(*pool) as router:
        a.fail_at, a.alive = 0, False
        assert router.stats() == {
            "retried": 0,
            "ejected": 0,
            "recovered": 0,
            "requests": 0,
            "generated_tokens": 0,
        }
        await answer(router, key_for(router, a.url))
        await answer(router, key_for(router, b.url))
        assert router.stats() == {
            "retried": 1,
            "ejected": 1,
            "recovered": 0,
            "requests": 3,
            "generated_tokens": 6,
        }
        assert [u["requests"] for u in router.upstreams()] == [1, 2, 0]
        assert router.upstreams()[2]["healthy"] is False


@pytest.mark.anyio
async def test_capabilities_are_those_every_upstream_has() -> None:
    a = FakeUpstream("http://gpu0:8080")
    b = FakeUpstream("http://gpu1:8080", grammar=False)
    c = FakeUpstream("http://gpu2:8080", time_bound=False)
    async with serving(a, b, c) as router:
        assert router.capabilities == Capabilities(grammar=False, time_bound=False)
        with pytest.raises(EngineError, match="takes no grammar"):
            await answer(router, sampling=Sampling(n_predict=8, grammar='root ::= "x"'))
        with pytest.raises(EngineError, match="takes no time bound"):
            await answer(router, sampling=Sampling(n_predict=8, max_predict_ms=500))
        assert a.calls == b.calls == c.calls == 0
    a, b = fakes(2)
    async with serving(a, b) as router:
        assert router.capabilities == Capabilities(grammar=True, time_bound=True)
        grammar = Sampling(n_predict=8, grammar='root ::= "x"', max_predict_ms=500)
        await answer(router, "alice:main.py", sampling=grammar)
        assert a.samplings + b.samplings == [grammar]


@pytest.mark.anyio
async def test_aclose_stops_the_health_checks_and_closes_the_upstreams() -> None:
    a, b, c = fakes(3)
    router = Router([upstream(a), upstream(b), upstream(c, reachable=False)], interval=0)
    await answer(router)
    await until(lambda: a.health_calls >= 3)  # checked again and again
    await close(router)
    checks = a.health_calls
    for _ in range(20):
        await asyncio.sleep(0)
    assert a.health_calls == checks
    assert (a.closed, b.closed, c.closed) == (1, 1, 0)


# -- the turn of a cancelled request ----------------------------------------------------------


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slot's release is watched for an hour: only ``/slots`` lets a turn go."""
    monkeypatch.setattr(router_module, "RELEASE_WAIT_S", NEVER)


@pytest.mark.anyio
async def test_a_run_that_ends_lets_go_of_its_turn_at_once() -> None:
    a, b = fakes(2)
    async with serving(a, b) as router:
        turn = Turn()
        chunks = router.run(IDS, SAMPLING, Route(key_for(router, a.url), turn))
        await anext(chunks)
        assert turn.held
        assert [chunk.text async for chunk in chunks] == [a.url]
        assert not turn.held and not turn.stopping
        assert a.busy_calls == b.busy_calls == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("at_cancel", "released"),
    [(1, 0), (2, 1)],  # (2, 1): another gateway keeps a slot busy: one fewer is the release
)
async def test_a_cancelled_run_holds_its_turn_until_its_slot_is_free(
    patient: None, at_cancel: int, released: int
) -> None:
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()  # never set: the model is still writing when the client goes
    a.busy = at_cancel
    async with serving(a, b) as router:
        turn = Turn()
        await cancel_after_first_chunk(router, key_for(router, a.url), turn)
        assert a.runs_closed == 1  # the connection is closed: llama.cpp stops
        assert turn.stopping and turn.held
        await until(lambda: a.busy_calls >= 2)
        assert turn.held  # asked twice, still busy
        a.busy = released
        await turn.let_go_of()
        assert not turn.held
        assert row(router, a.url)["in_flight"] == 0
        assert b.calls == 0


@pytest.mark.anyio
async def test_slots_busy_with_the_gateways_own_requests_do_not_hold_a_turn() -> None:
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()
    a.busy = 1  # the other request's slot
    async with serving(a, b) as router:
        key = key_for(router, a.url)
        other = asyncio.create_task(answer(router, key))
        await until(lambda: a.calls == 1)
        turn = Turn()
        await cancel_after_first_chunk(router, key, turn)
        await turn.let_go_of()
        assert a.busy_calls == 1  # let go at the first answer, not after RELEASE_WAIT_S
        assert not other.done()
        a.gates[1].set()
        assert await other == f"from {a.url}"


@pytest.mark.anyio
@pytest.mark.parametrize("busy", [None, RuntimeError("/slots: HTTP 501")])
async def test_a_turn_is_let_go_when_the_slots_cannot_be_known(
    busy: Exception | None,
) -> None:
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()
    a.busy = busy
    async with serving(a, b) as router:
        turn = Turn()
        await cancel_after_first_chunk(router, key_for(router, a.url), turn)
        assert turn.stopping
        await turn.let_go_of()
        assert a.busy_calls == 1  # let go at the first answer, not after RELEASE_WAIT_S


@pytest.mark.anyio
async def test_a_slot_that_stays_busy_is_watched_release_wait_s_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(router_module, "RELEASE_WAIT_S", 0)  # over at its first pause
    a, b = fakes(2)
    a.gates[1] = asyncio.Event()
    a.busy = 3
    async with serving(a, b) as router:
        turn = Turn()
        await cancel_after_first_chunk(router, key_for(router, a.url), turn)
        await turn.let_go_of()
        assert a.busy == 3 and a.busy_calls == 1
