"""Several upstream servers of one model behind one transport: routed with cache affinity,
health-checked, failed over.

- Affinity: each request carries who is typing where (API key and file). Upstreams are
  ranked for it by weighted rendezvous hashing, so the same editor and file land on the same
  upstream, where llama.cpp still holds its prompt, and the others spread by weight. The load
  is bounded (consistent hashing with bounded loads): an upstream whose slots are all busy
  and that holds more than ``LOAD_FACTOR`` times its weighted share of the requests in flight
  is passed over, so one busy editor cannot pin a loaded upstream. The slots count because a
  request sent elsewhere reads its whole prompt cold (seconds to tens of seconds on a CPU),
  while one more request in a free slot only shares the batch.
- The next keystroke: a cancelled request's turn (engines/sessions.py) is let go only once
  llama.cpp has let go of its slot (``/slots``), so that the editor's next request, which
  waits for it, lands where llama.cpp picks the idle slot whose cache shares the most with
  its prompt: that one.
- Health: every ``interval`` seconds each upstream's ``/health`` must answer 200 within
  ``timeout``; one that does not (dead, hung, loading) is ejected, and taken back when it
  answers again. A request that fails on an upstream ejects it at once. An upstream down
  when the gateway starts joins when it first answers (and runs the same model).
- Failover: a request that fails, or whose upstream is ejected, before its first token is
  sent again to the next upstream; the client never sees it. After the first token a
  failure ends the generation (``GenerationLost``: a stream ends with ``finish_reason:
  "error"``, a request answered whole is run again by the serving step); an ejection alone
  does not cut a stream that flows.
- Stalls: after its first token, an upstream that sends nothing for ``stall`` seconds, or
  for ``EJECTED_GRACE_S`` once the health check has ejected it (a frozen server), has lost
  the generation, and is ejected.
- Drain: an upstream marked draining takes no new requests; those in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from fimgate.engines.base import EngineError, GenerationLost
from fimgate.engines.counters import Counters
from fimgate.engines.transports.base import Capabilities, Chunk, Route, Sampling, Transport
from fimgate.engines.transports.http_upstream import UpstreamUnavailable

log = logging.getLogger("fimgate.router")

LOAD_FACTOR = 1.25
# How long a cancelled request's slot is watched for its release. llama.cpp lets go between
# two batches, which on a CPU take seconds while other slots read prompts; a cold read of the
# whole prompt in another slot takes longer still.
RELEASE_WAIT_S = 10.0
# An ejected upstream's stream that sends nothing for this long is lost (one that flows sends
# a token every tenth of a second or so, and is not cut for a health check that came late;
# a busy CPU's pauses between tokens stay under this).
EJECTED_GRACE_S = 2.0

T = TypeVar("T")


class UpstreamTransport(Transport, Protocol):
    url: str
    slots: int | None  # requests it serves at once, where the server says

    async def health(self, timeout: float) -> bool: ...

    async def busy_slots(self) -> int | None: ...


@dataclass(eq=False)
class Upstream:
    url: str
    # Reaches the server: reads its context length and vocabulary (blocking). Until it has
    # answered once, the upstream is out, and the health check keeps trying.
    opener: Callable[[], UpstreamTransport]
    capabilities: Capabilities
    weight: float = 1.0
    draining: bool = False
    transport: UpstreamTransport | None = None
    healthy: bool = False
    in_flight: int = 0
    # Set when the upstream is ejected: requests waiting on it give up and go elsewhere.
    ejected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def slots(self) -> int:
        return (self.transport.slots if self.transport else None) or 1

    def score(self, affinity: str) -> float:
        """Weighted rendezvous score: the highest takes the affinity key."""
        digest = hashlib.blake2b(f"{affinity}\0{self.url}".encode(), digest_size=8).digest()
        unit = ((int.from_bytes(digest) >> 11) + 0.5) / 2**53  # in (0, 1), never 1.0
        return -self.weight / math.log(unit)


class Router:
    """A transport over several upstreams serving the same model."""

    def __init__(
        self,
        upstreams: Sequence[Upstream],
        *,
        interval: float = 2.0,
        timeout: float = 5.0,
        stall: float = 30.0,
        policy: str = "affinity",
        refresh: Callable[[], dict[str, tuple[float, bool]]] | None = None,
    ) -> None:
        """``refresh``, called at every health check, gives each upstream's weight and
        whether it drains (by URL), as a backends file edited since says."""
        if not upstreams:
            raise EngineError("no upstream given")
        if policy not in ("affinity", "round-robin"):
            raise EngineError(f"unknown routing policy {policy!r}")
        self.pool = list(upstreams)
        self._policy = policy
        self._refresh = refresh
        self._interval, self._timeout, self._stall = interval, timeout, stall
        self._turn = 0
        self._health_task: asyncio.Task[None] | None = None
        self._counters = Counters("retried", "ejected", "recovered")
        self._tasks: set[asyncio.Task[None]] = set()
        self.capabilities = Capabilities(
            grammar=all(u.capabilities.grammar for u in self.pool),
            time_bound=all(u.capabilities.time_bound for u in self.pool),
        )
        failures = [f"{u.url}: {why}" for u in self.pool if (why := self._reach(u))]
        reached = [u for u in self.pool if u.transport is not None]
        for upstream in reached:
            upstream.healthy = True
        if not reached:
            raise EngineError(f"no upstream could be reached: {'; '.join(failures)}")
        for failure in failures:  # they join when they answer (check_health)
            log.warning("upstream %s; out until it answers", failure)
        self._reference = reached[0].transport
        self.context_length = min(u.transport.context_length for u in reached)  # type: ignore[union-attr]
        for upstream in reached[1:]:
            if why := self._differs(upstream.transport):  # type: ignore[arg-type]
                raise EngineError(f"{upstream.url} {why}")

    def _reach(self, upstream: Upstream) -> str | None:
        """Open ``upstream`` (blocking); what went wrong, or None."""
        try:
            upstream.transport = upstream.opener()
        except Exception as exc:  # unreachable, or not a server of this kind
            return repr(exc)
        return None

    def _differs(self, transport: UpstreamTransport) -> str | None:
        """Why ``transport`` cannot serve prompts built for the reference one, if it cannot:
        prompts are built once, for every upstream alike."""
        probes = ("<|fim_prefix|>", "<|fim_middle|>", "<|file_sep|>", "<s>", "[SUFFIX]")
        mine = [transport.special_token(p) for p in probes]
        if mine != [self._reference.special_token(p) for p in probes]:
            return "runs another model (its vocabulary differs): upstreams of one model must agree"
        if transport.context_length < self.context_length:
            return f"holds {transport.context_length} tokens, fewer than {self.context_length}"
        return None

    # -- what the prompt builder asks -------------------------------------------------------

    def special_token(self, marker: str) -> int | None:
        return self._reference.special_token(marker)

    def bos_token(self) -> str | None:
        return self._reference.bos_token()

    async def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        self._watch()
        tried: set[Upstream] = set()
        while (upstream := self._pick("", tried)) is not None:
            try:
                tokens = upstream.transport.tokenize(text, pieces)  # type: ignore[union-attr]
                return await _unless_ejected(upstream, tokens)
            except EngineError as exc:
                self._eject(upstream, exc)
                tried.add(upstream)
        raise EngineError("no healthy upstream to tokenize with")

    # -- generation --------------------------------------------------------------------------

    async def run(self, ids: list[int], sampling: Sampling, route: Route) -> AsyncIterator[Chunk]:
        sampling.check(self.capabilities)
        self._watch()
        tried: set[Upstream] = set()
        while True:
            upstream = self._pick(route.affinity, tried)
            if upstream is None:
                raise UpstreamUnavailable(f"no healthy upstream left (tried {len(tried)})")
            tried.add(upstream)
            started = False
            upstream.in_flight += 1
            route.turn.hold()
            # The upstream's stream is read in a task of its own, so that waiting for it can
            # also wait for its ejection; cancelling that task closes the connection.
            queue: asyncio.Queue[Chunk | BaseException | None] = asyncio.Queue()
            chunks = upstream.transport.run(ids, sampling, route)  # type: ignore[union-attr]
            pump = asyncio.create_task(_pump(chunks, queue))
            ended = False  # the stream ended or failed, rather than its reader leaving
            try:
                while (chunk := await _next(queue, upstream, started, self._stall)) is not None:
                    started = True
                    yield chunk
                ended = True
                return
            except UpstreamUnavailable as exc:
                ended = True
                self._eject(upstream, exc)
                if started:
                    raise GenerationLost(str(exc)) from exc
                self._counters.add(retried=1)
            except EngineError:
                ended = True  # the upstream answered with an error: no slot left to watch
                raise
            finally:
                upstream.in_flight -= 1
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
                self._let_go(upstream, route, cancelled=not ended)

    async def chat(self, body: dict[str, Any], route: Route) -> AsyncIterator[dict[str, Any]]:
        """A chat answer from the least busy healthy upstream (a chat's prompt is its own: no
        affinity); read as ``run`` reads a completion: one ejected or failing before its first
        chunk is left for the next."""
        self._watch()
        tried: set[Upstream] = set()
        while True:
            upstream = self._pick("", tried)
            if upstream is None:
                raise UpstreamUnavailable(f"no healthy upstream left (tried {len(tried)})")
            tried.add(upstream)
            upstream.in_flight += 1
            queue: asyncio.Queue[Any] = asyncio.Queue()
            events = upstream.transport.chat(body, route)  # type: ignore[union-attr]
            pump = asyncio.create_task(_pump(events, queue))
            started = False
            try:
                while (event := await _next(queue, upstream, started, self._stall)) is not None:
                    started = True
                    yield event
                return
            except UpstreamUnavailable as exc:
                self._eject(upstream, exc)
                if started:
                    raise GenerationLost(str(exc)) from exc
                self._counters.add(retried=1)
            finally:
                upstream.in_flight -= 1
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    # -- the next keystroke after a cancelled one ----------------------------------------------

    def _let_go(self, upstream: Upstream, route: Route, cancelled: bool) -> None:
        """Let go of ``route``'s turn: at once when its request ended, else (cancelled) once
        llama.cpp has let go of its slot."""
        if not cancelled:
            route.turn.let_go()
            return
        route.turn.stop()
        task = asyncio.get_running_loop().create_task(self._watch_release(upstream, route))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_release(self, upstream: Upstream, route: Route) -> None:
        """Released once no slot there is busy beyond this gateway's own requests in flight,
        or, where other gateways keep slots busy too, once fewer are than at the cancel (most
        likely the cancelled request's own slot, the first to stop)."""
        at_cancel: int | None = None
        pause = 0.01  # then less often: a slot held for a batch is asked about seconds long
        try:
            async with asyncio.timeout(RELEASE_WAIT_S):
                while True:
                    busy = await upstream.transport.busy_slots()  # type: ignore[union-attr]
                    if busy is None:
                        return
                    others = busy - upstream.in_flight
                    if others <= 0 or (at_cancel is not None and others < at_cancel):
                        return
                    at_cancel = at_cancel or others
                    await asyncio.sleep(pause)
                    pause = min(pause * 1.5, 0.1)
        except Exception:  # not known: the next request just goes
            return
        finally:
            route.turn.let_go()

    def _pick(self, affinity: str, tried: set[Upstream]) -> Upstream | None:
        ready = [u for u in self.pool if u.healthy and not u.draining and u not in tried]
        if not ready:
            return None
        if self._policy == "round-robin" or not affinity:
            self._turn += 1
            least = min(u.in_flight / u.weight for u in ready)
            idle = [u for u in ready if u.in_flight / u.weight == least]
            return idle[self._turn % len(idle)]
        total = sum(u.in_flight for u in ready) + 1
        weights = sum(u.weight for u in ready)
        for upstream in sorted(ready, key=lambda u: u.score(affinity), reverse=True):
            share = math.ceil(LOAD_FACTOR * total * upstream.weight / weights)
            if upstream.in_flight < max(share, upstream.slots):
                return upstream
        return min(ready, key=lambda u: u.in_flight / u.weight)

    # -- health ------------------------------------------------------------------------------

    def _eject(self, upstream: Upstream, why: object) -> None:
        if upstream.healthy:
            upstream.healthy = False
            upstream.ejected.set()
            self._counters.add(ejected=1)
            log.warning("upstream %s ejected: %s", upstream.url, why)

    def _watch(self) -> None:
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.get_running_loop().create_task(self._check_forever())

    async def _check_forever(self) -> None:
        while True:
            await self.check_health()
            await asyncio.sleep(self._interval)

    async def check_health(self) -> None:
        if self._refresh is not None:
            self._apply(self._refresh())
        answers = await asyncio.gather(*map(self._answers, self.pool))
        for upstream, why in zip(self.pool, answers, strict=True):
            if why is not None:
                self._eject(upstream, why)
            elif not upstream.healthy:
                upstream.healthy = True
                upstream.ejected.clear()
                self._counters.add(recovered=1)
                log.warning("upstream %s is back", upstream.url)

    async def _answers(self, upstream: Upstream) -> str | None:
        """None when the upstream answers as it should; else why not."""
        # One never reached yet: try to, off the event loop.
        if upstream.transport is None and (why := await asyncio.to_thread(self._join, upstream)):
            return why
        try:
            healthy = await upstream.transport.health(self._timeout)  # type: ignore[union-attr]
        except Exception as exc:  # a check that fails says so, and the next one still runs
            return repr(exc)
        return None if healthy else f"/health did not answer 200 within {self._timeout} s"

    def _join(self, upstream: Upstream) -> str | None:
        """Reach an upstream that was down at start, and check it runs the same model."""
        if why := self._reach(upstream):
            return why
        try:
            why = self._differs(upstream.transport)  # type: ignore[arg-type]
        except Exception as exc:  # the reference itself is gone: try again next time
            why = repr(exc)
        if why:
            upstream.transport = None
        return why

    def _apply(self, wanted: dict[str, tuple[float, bool]]) -> None:
        for upstream in self.pool:
            if upstream.url in wanted:
                weight, drain = wanted[upstream.url]
                if drain != upstream.draining:
                    log.warning("upstream %s %s", upstream.url, "drains" if drain else "takes work")
                upstream.weight, upstream.draining = weight, drain

    def upstreams(self) -> list[dict[str, object]]:
        return [
            {
                "url": u.url,
                "weight": u.weight,
                "healthy": u.healthy,
                "draining": u.draining,
                "in_flight": u.in_flight,
                "requests": u.transport.stats().get("requests", 0) if u.transport else 0,
            }
            for u in self.pool
        ]

    def stats(self) -> dict[str, int]:
        totals = self._counters.snapshot()
        for upstream in self.pool:
            for key, value in (upstream.transport.stats() if upstream.transport else {}).items():
                totals[key] = totals.get(key, 0) + value
        return totals

    async def aclose(self) -> None:
        for task in list(self._tasks):  # release watches: each lets go of its turn
            task.cancel()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for upstream in self.pool:
            if upstream.transport is not None:
                await upstream.transport.aclose()


async def _pump(chunks: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    """Every chunk of one upstream call into ``queue``, then None, or the error it raised."""
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                queue.put_nowait(chunk)
        queue.put_nowait(None)
    except Exception as exc:  # handed to the reader, which decides
        queue.put_nowait(exc)


async def _unless_ejected(upstream: Upstream, awaitable: Awaitable[T]) -> T:
    """What ``awaitable`` gives, unless the upstream is ejected first (a hung server never
    answers: the health check is what finds it)."""
    task = asyncio.ensure_future(awaitable)
    ejected = asyncio.ensure_future(upstream.ejected.wait())
    try:
        await asyncio.wait((task, ejected), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the request itself is cancelled: so is what it awaits
        task.cancel()
        raise
    finally:
        ejected.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise UpstreamUnavailable(f"{upstream.url} was ejected while it answered")
    return task.result()


async def _next(queue: asyncio.Queue[Any], upstream: Upstream, started: bool, stall: float) -> Any:
    """The next chunk. Before the first one, also give up when the upstream is ejected (a hung
    server never answers, and the request can still go elsewhere unseen); after it, when it
    stalls (``_flowing``)."""
    if not queue.empty():
        item = queue.get_nowait()
    elif started:
        item = await _flowing(queue, upstream, stall)
    else:
        item = await _unless_ejected(upstream, queue.get())
    if isinstance(item, BaseException):
        raise item
    return item


async def _flowing(queue: asyncio.Queue[Any], upstream: Upstream, stall: float) -> Any:
    """The next chunk of a generation under way, unless none comes for ``stall`` seconds, or
    for ``EJECTED_GRACE_S`` while the upstream is ejected: a stream that flows is not cut for
    a health check that came late, one that stopped is."""
    get = asyncio.ensure_future(queue.get())
    try:
        async with asyncio.timeout(stall):
            while True:
                done, _ = await asyncio.wait({get}, timeout=EJECTED_GRACE_S)
                if done:
                    return get.result()
                if not upstream.healthy:
                    raise UpstreamUnavailable(
                        f"{upstream.url} was ejected and sent nothing for {EJECTED_GRACE_S} s"
                    )
    except TimeoutError:
        raise UpstreamUnavailable(f"{upstream.url} sent nothing for {stall} s") from None
    finally:
        get.cancel()
