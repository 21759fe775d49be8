"""One request (a completion on any wire, or a chat answer), top to bottom (vLLM's
serving_completion, in small):

    parse → resolve → encode → admit → generate → one outcome → settle

``FimServing.complete`` reads in that order; the wire (api/wires/) reads the client's format
into the job and writes the answer back in it. While the request runs its state is one
``RequestState``; when it ends, whichever way, it leaves one immutable ``Outcome``
(gateway/outcome.py), and ``_settle`` makes from it the ledger row and the limiter's settle
(the gateway's), the metrics and the log line: in one place, once. The ways it ends:

- answered (200);
- refused before the engine ran: 4xx, or 503 (draining, a store that cannot be reached);
- cancelled: the client left (499 before any byte was sent, 200 once a stream had started);
- failed: the engine failed (503; mid-stream, a ``finish_reason: "error"`` chunk), or a fault
  of ours (500, which the app's handler answers).

A request is answered only after its row is written: if the ledger cannot take it, the
client gets a 503 instead of a completion nobody would be charged for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fimgate.api.errors import ApiError, unavailable
from fimgate.api.metrics import Metrics
from fimgate.api.middleware import ARRIVED
from fimgate.api.ratelimit_headers import rate_limit_headers
from fimgate.api.request_body import BodyGone, read_body
from fimgate.api.request_log import log_request
from fimgate.api.streaming import SSE_HEADERS, until_disconnected
from fimgate.api.wires.base import Asked, Timing, Wire
from fimgate.engines.base import (
    Editor,
    EncodedPrompt,
    Engine,
    EngineError,
    EngineRefused,
    FimJob,
    Finished,
    GenerationLost,
    Job,
    PromptTooLong,
    TextDelta,
)
from fimgate.engines.registry import ModelRegistry, ServedModel, UnknownModel
from fimgate.gateway import acceptance
from fimgate.gateway.acceptance import Verdict
from fimgate.gateway.core import (
    Gateway,
    GatewayUnavailable,
    LedgerUnavailable,
    NeverFits,
    RateLimited,
)
from fimgate.gateway.keys import Principal
from fimgate.gateway.outcome import Admission, Outcome, RequestState
from fimgate.gateway.ratelimit import Decision
from fimgate.settings import ServerSettings
from fimgate.store.tables import utcnow

log = logging.getLogger("fimgate.api")

# A client's own request id is kept (and echoed) when it looks like one: no header injection,
# no unbounded log fields.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def check_region(regions: list[str], region: str | None) -> None:
    """A 404 for a region this server does not serve (``/mistral/{region}/...``)."""
    if region is not None and region not in regions:
        raise ApiError(
            404,
            f"unknown region {region!r}; this server serves: {', '.join(regions)}",
            code="region_not_found",
        )


class EngineFailed(ApiError):
    """The model failed, for a reason that is not the client's."""

    def __init__(self, exc: EngineError) -> None:
        super().__init__(503, f"the model failed: {exc}", type="engine_error")


def _refused(exc: EngineRefused) -> ApiError:
    return ApiError(400, str(exc), code="not_supported")


def _not_recorded(exc: LedgerUnavailable) -> ApiError:
    return ApiError(503, str(exc), type="service_unavailable", code="usage_not_recorded")


_DRAINING = ApiError(
    503, "this server is shutting down; retry (another replica, or this one restarted, will "
    "answer)", type="service_unavailable", code="draining", headers={"Retry-After": "5"},
)  # fmt: skip


class Live:
    """A request while it runs: the serving step's alone, ended once into an ``Outcome``."""

    def __init__(
        self, principal: Principal, client_request_id: str | None, route: str,
        arrived: float | None = None,
    ) -> None:  # fmt: skip
        self.principal = principal
        self.route = route  # the wire, until the request names its kind
        self.request_id = f"cmpl-{uuid.uuid4().hex}"
        self.client_request_id = client_request_id
        # The clock runs from the request's arrival (api.middleware.StampArrival), the key
        # check included: its latency is what the client waited.
        now = time.monotonic()
        self.started = now if arrived is None else min(arrived, now)
        self.created_at = utcnow() - timedelta(seconds=now - self.started)
        self.state = RequestState.RECEIVED
        self.stream = False
        self.streamed = False  # its stream's response has begun (headers sent)
        self.model: str | None = None
        self.job: Job | None = None  # once the request is read
        self.shown = ""  # the text the client got (what its next prompt judges)
        self.judged: Verdict | None = None
        self.decision: Decision | None = None  # the rate limiter's last word, for headers
        self.admission: Admission | None = None
        self.completion_tokens = 0
        self.prompt_tokens: int | None = None  # the engine's count at the end (a chat's)
        self.first_token_at: float | None = None

    def _prompt_tokens(self) -> int:
        if self.admission is None:
            return 0
        return self.admission.prompt_tokens if self.prompt_tokens is None else self.prompt_tokens

    def timing(self) -> Timing:
        first = None if self.first_token_at is None else self.first_token_at - self.started
        return Timing(first, time.monotonic() - self.started)

    def end(self, state: RequestState, status: int) -> Outcome | None:
        """Its one record; None if it has ended already."""
        if self.state.ended:
            return None
        self.state = state
        ttft = None if self.first_token_at is None else self.first_token_at - self.started
        return Outcome(
            request_id=self.request_id,
            route=self.route,
            client_request_id=self.client_request_id,
            principal=self.principal,
            created_at=self.created_at,
            model=self.model,
            stream=self.stream,
            streamed=self.streamed,
            state=state,
            status=status,
            prompt_tokens=self._prompt_tokens(),
            completion_tokens=self.completion_tokens,
            latency_s=time.monotonic() - self.started,
            ttft_s=ttft,
            admission=self.admission,
            decision=self.decision,
            judged=self.judged,
        )


class SettledStream(StreamingResponse):
    """An SSE response whose request is settled however the stream ends: the generator
    settles it before ``[DONE]``; a client that leaves mid-stream ends it here."""

    def __init__(
        self, content: AsyncIterator[bytes], media_type: str, headers: dict[str, str],
        settle_left: Callable[[], Awaitable[object]],
    ) -> None:  # fmt: skip
        super().__init__(content, media_type=media_type, headers=headers)
        self._settle_left = settle_left

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._settle_left()


class FimServing:
    def __init__(
        self, settings: ServerSettings, registry: ModelRegistry, gateway: Gateway,
        metrics: Metrics,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.registry = registry
        self.sessions = registry.sessions
        self.gateway = gateway
        self.metrics = metrics
        self.in_flight = 0  # requests received and not yet settled (what a drain waits for)
        self.draining = False  # set on SIGTERM (api.drain): new requests get a 503

    async def complete(
        self, request: Request, principal: Principal, region: str | None, wire: Wire
    ) -> Response:
        client_id = request.headers.get("x-request-id", "")
        live = Live(principal, client_id if _CLIENT_REQUEST_ID.fullmatch(client_id) else None,
                    wire.name, request.scope.get("state", {}).get(ARRIVED))  # fmt: skip
        self.in_flight += 1
        async with self._ended_if_interrupted(live):
            try:
                if self.draining:
                    raise _DRAINING
                body = await read_body(
                    request, self.settings.max_body_bytes, self.settings.body_read_s
                )
                live.route = wire.route_of(body) if wire.route_of else wire.name
                asked = wire.parse(body)
                live.stream, live.route = asked.streams, asked.route
                served = self._resolve(region, asked.model_name, wire.any_model)
                live.model = served.name
                editor = Editor(principal.key_id, served.name, workspace=principal.workspace_id,
                                memory=principal.memory)  # type: ignore[arg-type]  # fmt: skip
                live.job = job = asked.job(editor, self.settings.default_temperature)
                prompt = await self._encode(live, served, job)
                await self._admit(live, served, prompt)
            except EngineFailed as error:
                return await self._refuse(live, wire, error, RequestState.FAILED)
            except ApiError as error:
                return await self._refuse(live, wire, error)
            except BodyGone:
                return await self._left(live)
        if live.stream:
            return SettledStream(
                self._stream(request, live, asked, served.engine, prompt),
                media_type=wire.media_type,
                headers={**SSE_HEADERS, **self._headers(live)},
                settle_left=lambda: self._left(live, status=200),
            )
        async with self._ended_if_interrupted(live):
            return await self._whole(request, live, wire, asked, served.engine, prompt)

    @contextlib.asynccontextmanager
    async def _ended_if_interrupted(self, live: Live) -> AsyncIterator[None]:
        """A task cancelled from outside ends its request as cancelled (the client left), a
        fault of ours as failed (500, which the app's handler then answers)."""
        try:
            yield
        except asyncio.CancelledError:
            await self._left(live)
            raise
        except Exception:
            with anyio.CancelScope(shield=True), contextlib.suppress(LedgerUnavailable):
                await self._settle(live, RequestState.FAILED, 500)
            raise

    # -- resolve, encode, admit ------------------------------------------------------------

    def _resolve(self, region: str | None, model: str | None, any_model: bool) -> ServedModel:
        check_region(self.settings.regions, region)
        if model is None:  # a wire without a model field: the first model served
            return self.registry.models[0]
        try:
            return self.registry.resolve(model)
        except UnknownModel as exc:
            if any_model:
                return self.registry.models[0]
            raise ApiError(404, str(exc), code="model_not_found", param="model") from None

    async def _encode(self, live: Live, served: ServedModel, job: Job) -> EncodedPrompt:
        try:
            return await served.engine.encode(job)
        except PromptTooLong as exc:
            live.decision = await self.gateway.peek(live.principal, served.name, served.aliases)
            raise ApiError(400, str(exc), code="context_length_exceeded", param="prompt") from None
        except EngineRefused as exc:
            raise _refused(exc) from None
        except EngineError as exc:
            raise EngineFailed(exc) from None

    async def _admit(self, live: Live, served: ServedModel, prompt: EncodedPrompt) -> None:
        try:
            admission = await self.gateway.admit(
                live.principal, live.request_id, served.name, served.aliases,
                prompt.tokens, prompt.max_new,
            )  # fmt: skip
        except NeverFits as exc:
            live.decision = exc.decision
            raise ApiError(413, str(exc), code="exceeds_token_rate_limit", param="prompt") from None
        except RateLimited as exc:
            live.decision = exc.decision
            raise ApiError(
                429, str(exc), type="rate_limit_error", code="rate_limit_exceeded"
            ) from None
        except GatewayUnavailable as exc:
            raise unavailable(str(exc)) from None
        live.admission, live.decision = admission, admission.decision
        live.state = RequestState.ADMITTED
        self.metrics.started(served.name)

    # -- generate ----------------------------------------------------------------------------

    async def _whole(
        self, request: Request, live: Live, wire: Wire, asked: Asked, engine: Engine,
        prompt: EncodedPrompt,
    ) -> Response:  # fmt: skip
        assert live.job is not None
        deltas: list[TextDelta] = []
        done: Finished | None = None
        for attempt in (1, 2):
            deltas.clear()
            try:
                async for event in until_disconnected(request, engine.generate(prompt, live.job)):
                    if isinstance(event, Finished):
                        done = event
                    else:
                        self._token(live, event)
                        deltas.append(event)
                break
            except GenerationLost as exc:
                # The client has seen nothing of it: run it again, once (an upstream router
                # sends it to another upstream; the lost one is ejected).
                if attempt == 2:
                    return await self._refuse(live, wire, EngineFailed(exc), RequestState.FAILED)
                log.warning("request %s: generation lost (%s); run again", live.request_id, exc)
            except EngineRefused as exc:
                return await self._refuse(live, wire, _refused(exc))
            except EngineError as exc:
                return await self._refuse(live, wire, EngineFailed(exc), RequestState.FAILED)
        if done is None:  # the client went away; nobody reads this
            return await self._left(live)
        live.completion_tokens, live.prompt_tokens = done.completion_tokens, done.prompt_tokens
        assert live.model is not None
        live.shown = "".join(d.text for d in deltas)
        answer = asked.answer(live.request_id, live.model, deltas, done, live.timing())
        try:
            await self._settle(live, RequestState.ANSWERED, 200)
        except LedgerUnavailable as exc:
            return wire.error(_not_recorded(exc), self._headers(live))
        return JSONResponse(answer, headers=self._headers(live))

    async def _stream(
        self, request: Request, live: Live, asked: Asked, engine: Engine, prompt: EncodedPrompt
    ) -> AsyncIterator[bytes]:
        assert live.model is not None and live.job is not None
        chunks = asked.chunks(live.request_id, live.model)
        live.streamed = True  # the response's headers are sent before its first chunk
        yield chunks.opening()
        end: tuple[RequestState, int] | None = None  # None: the client left before the end
        try:
            async for event in until_disconnected(request, engine.generate(prompt, live.job)):
                if isinstance(event, Finished):
                    live.completion_tokens = event.completion_tokens
                    live.prompt_tokens = event.prompt_tokens
                    end = (RequestState.ANSWERED, 200)
                    yield chunks.finished(event, live.timing())
                else:
                    self._token(live, event)
                    # What the editor got is what it may accept, whole or cut short by the
                    # client (Continue closes a stream once it has a line).
                    live.shown += event.text
                    yield chunks.text(event)
        except EngineError:
            # Headers are sent already: end the stream with an error finish (Mistral's way, or
            # the wire's), and record the status it would have had.
            end = (RequestState.FAILED, 503)
            live.shown = ""
            yield chunks.failed()
        except Exception:  # a fault of ours, after the headers: ended and recorded as one
            log.exception("a stream failed")
            end = (RequestState.FAILED, 500)
            live.shown = ""
            yield chunks.failed()
        if end is None:
            return  # the client left: SettledStream records it as cancelled
        # Settled and recorded before [DONE]: a client that saw the end has its ledger row.
        try:
            await self._settle(live, *end)
        except LedgerUnavailable:
            return  # no [DONE]: the stream did not end well
        yield chunks.closing()

    def _token(self, live: Live, delta: TextDelta) -> None:
        if live.first_token_at is None:
            live.first_token_at = time.monotonic()
            live.state = RequestState.GENERATING
            self.metrics.first_token(live.model or "")
        live.completion_tokens = delta.tokens

    def _headers(self, live: Live) -> dict[str, str]:
        headers = {"x-request-id": live.client_request_id or live.request_id}
        if live.decision is not None:
            headers.update(rate_limit_headers(live.decision))
        return headers

    # -- the end -------------------------------------------------------------------------------

    async def _settle(self, live: Live, state: RequestState, status: int) -> None:
        """End the request into its one record, and make everything of it: the ledger row and
        the reservation settled (the gateway), the metrics, the log line. Once."""
        if live.state.ended:
            return
        self._judge(live)
        outcome = live.end(state, status)
        assert outcome is not None  # it had not ended: checked above
        started = time.monotonic()
        told = outcome  # what the client is told, for the metrics and the log line
        try:
            await self.gateway.settle(outcome)
        except LedgerUnavailable:
            if outcome.withheld_unrecorded:
                told = dataclasses.replace(outcome, status=503)
            raise
        finally:
            self.in_flight -= 1
            self.metrics.record(told, ledger_seconds=time.monotonic() - started)
            log_request(told)

    def _judge(self, live: Live) -> None:
        """The editor's last completion, judged by this prompt; what this one showed is kept
        for its next to judge (gateway/acceptance.py)."""
        job = live.job
        # A warm-up (no tokens asked for) shows nothing, so it judges nothing either; nor
        # does a chat answer.
        if isinstance(job, FimJob) and job.editor is not None and job.max_tokens != 0:
            memory = self.sessions.memory(job.editor)
            live.judged, memory.shown = acceptance.succeed(memory.shown, job.prefix, live.shown)

    async def _refuse(
        self, live: Live, wire: Wire, error: ApiError, state: RequestState = RequestState.REFUSED
    ) -> Response:
        try:
            await self._settle(live, state, error.status)
        except LedgerUnavailable as exc:
            error = _not_recorded(exc)
        return wire.error(error, self._headers(live))

    async def _left(self, live: Live, status: int = 499) -> Response:
        """The client left (or the task was cancelled) before the request was settled."""
        with anyio.CancelScope(shield=True), contextlib.suppress(LedgerUnavailable):
            await self._settle(live, RequestState.CANCELLED, status)
        return Response(status_code=499)
