"""One place runs a FIM request from start to end (vLLM's serving_completion, in small):
read the body, resolve the model, encode, admit, stream or aggregate, settle, record the
request exactly once (ledger row, metrics, log line), and set the response's headers.

Every way out goes through ``_settle``: an answer, a refusal (4xx/5xx), a client that left
(recorded as cancelled: 499 before any byte was sent, 200 once a stream had started), and an
engine that failed mid-stream (recorded as 503, the status it would have had). A request is
answered only after its row is written: if the ledger cannot take it, the client gets a 503
instead of a completion nobody would be charged for.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from fimgate.api.errors import ApiError, error_response
from fimgate.api.metrics import Metrics
from fimgate.api.ratelimit_headers import rate_limit_headers
from fimgate.api.request_body import BodyGone, parse_fim_request, read_body
from fimgate.api.request_log import log_request
from fimgate.api.schemas import (
    AssistantMessage,
    ChatCompletionChoice,
    CompletionChunk,
    DeltaMessage,
    FimCompletionRequest,
    FimCompletionResponse,
    FinishReason,
    StreamChoice,
    UsageInfo,
)
from fimgate.api.streaming import SSE_DONE, SSE_HEADERS, sse_event, until_disconnected
from fimgate.config import Settings
from fimgate.engines.base import EncodedPrompt, EngineError, FimJob, Finished, PromptTooLong
from fimgate.engines.registry import ModelRegistry, ServedModel, UnknownModel
from fimgate.gateway.core import (
    Gateway,
    GatewayUnavailable,
    LedgerUnavailable,
    NeverFits,
    RateLimited,
    RequestUsage,
)
from fimgate.gateway.keys import Principal

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


def _usage_info(done: Finished) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )


def _engine_failed(exc: EngineError) -> ApiError:
    return ApiError(503, f"the model failed: {exc}", type="engine_error")


def _not_recorded(exc: LedgerUnavailable) -> ApiError:
    return ApiError(503, str(exc), type="service_unavailable", code="usage_not_recorded")


_DRAINING = ApiError(
    503, "this server is shutting down; retry (another replica, or this one restarted, will "
    "answer)", type="service_unavailable", code="draining", headers={"Retry-After": "5"},
)  # fmt: skip


class SettledStream(StreamingResponse):
    """An SSE response whose request is settled however the stream ends: the generator
    settles it before ``[DONE]``; a client that leaves mid-stream ends it here."""

    def __init__(
        self, content: AsyncIterator[bytes], headers: dict[str, str],
        settle_left: Callable[[], Awaitable[None]],
    ) -> None:  # fmt: skip
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._settle_left = settle_left

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._settle_left()


class FimServing:
    def __init__(
        self, settings: Settings, registry: ModelRegistry, gateway: Gateway, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.gateway = gateway
        self.metrics = metrics
        self.in_flight = 0  # requests opened and not yet settled (what a drain waits for)
        self.draining = False  # set on SIGTERM (api.drain): new requests get a 503

    async def complete(
        self, request: Request, principal: Principal, region: str | None
    ) -> Response:
        usage = self.gateway.open(principal)
        self.in_flight += 1
        client_id = request.headers.get("x-request-id", "")
        if _CLIENT_REQUEST_ID.fullmatch(client_id):
            usage.client_request_id = client_id
        if self.draining:
            return await self._refuse(usage, _DRAINING)
        async with self._recorded_if_it_fails(usage):
            try:
                body = parse_fim_request(await read_body(request, self.settings.max_body_bytes))
                usage.stream = bool(body.stream)
                served, job, prompt = await self._prepare(usage, region, body)
            except ApiError as error:
                return await self._refuse(usage, error)
            except BodyGone:
                return await self._left(usage)
        self.metrics.started(usage)
        if body.stream:
            return SettledStream(
                self._sse(request, usage, served, job, prompt),
                headers={**SSE_HEADERS, **self._headers(usage)},
                settle_left=lambda: self._left(usage, status=200),
            )
        async with self._recorded_if_it_fails(usage):
            return await self._aggregate(request, usage, served, job, prompt)

    @contextlib.asynccontextmanager
    async def _recorded_if_it_fails(self, usage: RequestUsage) -> AsyncIterator[None]:
        """A task cancelled from outside is recorded as a client gone, a fault of ours as a
        500 (which the app's handler then answers)."""
        try:
            yield
        except asyncio.CancelledError:
            await self._left(usage)
            raise
        except Exception:
            await self._failed(usage)
            raise

    # -- before the engine -----------------------------------------------------------------

    async def _prepare(
        self, usage: RequestUsage, region: str | None, body: FimCompletionRequest
    ) -> tuple[ServedModel, FimJob, EncodedPrompt]:
        check_region(self.settings.regions, region)
        try:
            served = self.registry.resolve(body.model)
        except UnknownModel as exc:
            raise ApiError(404, str(exc), code="model_not_found", param="model") from None
        usage.model = served.name
        job = self._job(body, usage.principal.key_id)
        usage.judged = self.gateway.acceptance.judge(job.editor, served.name, job.prefix)
        try:
            prompt = await served.engine.encode(job)
        except PromptTooLong as exc:
            await self.gateway.observe(usage, served.name, served.aliases)
            raise ApiError(400, str(exc), code="context_length_exceeded", param="prompt") from None
        except EngineError as exc:
            raise _engine_failed(exc) from None
        room = served.engine.context_length - prompt.tokens
        max_new = room if job.max_tokens is None else min(job.max_tokens, room)
        try:
            await self.gateway.admit(usage, served.name, prompt.tokens, max_new, served.aliases)
        except NeverFits as exc:
            raise ApiError(413, str(exc), code="exceeds_token_rate_limit", param="prompt") from None
        except GatewayUnavailable as exc:
            raise ApiError(503, str(exc), type="service_unavailable") from None
        except RateLimited as exc:
            raise ApiError(
                429, str(exc), type="rate_limit_error", code="rate_limit_exceeded"
            ) from None
        return served, job, prompt

    def _job(self, body: FimCompletionRequest, editor: str) -> FimJob:
        temperature = body.temperature
        return FimJob(
            prefix=body.prompt,
            suffix=body.suffix or "",
            max_tokens=body.token_limit,
            min_tokens=body.min_tokens or 0,
            temperature=self.settings.default_temperature if temperature is None else temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            # llama.cpp seeds are 32-bit and 0xFFFFFFFF means "random": fold larger seeds.
            seed=None if body.random_seed is None else body.random_seed % 0xFFFFFFFF,
            stop=body.stop_list,
            frequency_penalty=body.frequency_penalty or 0.0,
            presence_penalty=body.presence_penalty or 0.0,
            editor=editor,
        )

    # -- the answer ------------------------------------------------------------------------

    async def _aggregate(
        self, request: Request, usage: RequestUsage, served: ServedModel, job: FimJob,
        prompt: EncodedPrompt,
    ) -> Response:  # fmt: skip
        text: list[str] = []
        done: Finished | None = None
        try:
            async for event in until_disconnected(request, served.engine.generate(prompt, job)):
                if isinstance(event, Finished):
                    done = event
                else:
                    self._token(usage, event.tokens)
                    text.append(event.text)
        except EngineError as exc:
            return await self._refuse(usage, _engine_failed(exc))
        if done is None:  # the client went away; nobody reads this
            return await self._left(usage)
        usage.completion_tokens = done.completion_tokens
        answer = FimCompletionResponse(
            id=usage.request_id,  # the ledger's request id, so the two can be matched
            model=served.name,
            created=int(time.time()),
            usage=_usage_info(done),
            choices=[
                ChatCompletionChoice(
                    message=AssistantMessage(content="".join(text)),
                    finish_reason=done.finish_reason,
                )
            ],
        )
        try:
            await self._settle(usage, 200)
        except LedgerUnavailable as exc:
            return error_response(_not_recorded(exc), self._headers(usage))
        self.gateway.acceptance.shown(job.editor, served.name, job.prefix, "".join(text))
        return JSONResponse(answer.model_dump(), headers=self._headers(usage))

    async def _sse(
        self, request: Request, usage: RequestUsage, served: ServedModel, job: FimJob,
        prompt: EncodedPrompt,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        created = int(time.time())

        def chunk(
            content: str = "", finish: FinishReason | None = None, info: UsageInfo | None = None,
            role: bool = False,
        ) -> bytes:  # fmt: skip
            delta = DeltaMessage(role="assistant" if role else None, content=content)
            return sse_event(
                CompletionChunk(
                    id=usage.request_id,
                    created=created,
                    model=served.name,
                    choices=[StreamChoice(delta=delta, finish_reason=finish)],
                    usage=info,
                )
            )

        yield chunk(role=True)
        status: int | None = None  # None: the client left before the end
        sent: list[str] = []
        try:
            async for event in until_disconnected(request, served.engine.generate(prompt, job)):
                if isinstance(event, Finished):
                    usage.completion_tokens = event.completion_tokens
                    status = 200
                    yield chunk(finish=event.finish_reason, info=_usage_info(event))
                else:
                    self._token(usage, event.tokens)
                    sent.append(event.text)
                    yield chunk(event.text)
        except EngineError:
            # Headers are sent already: end the stream with an error finish, as Mistral does,
            # and record the status it would have had.
            status = 503
            yield chunk(finish="error")
        finally:
            # What the editor got is what it may accept, whole or cut short by the client
            # (Continue closes a stream once it has a line).
            if status != 503:
                self.gateway.acceptance.shown(job.editor, served.name, job.prefix, "".join(sent))
        if status is None:
            return  # the client left: SettledStream records it as cancelled
        # Settled and recorded before [DONE]: a client that saw the end has its ledger row.
        try:
            await self._settle(usage, status)
        except LedgerUnavailable:
            return  # no [DONE]: the stream did not end well
        yield SSE_DONE

    def _token(self, usage: RequestUsage, tokens: int) -> None:
        if usage.first_token_at is None:
            usage.first_token_at = time.monotonic()
            self.metrics.first_token(usage)
        usage.completion_tokens = tokens

    def _headers(self, usage: RequestUsage) -> dict[str, str]:
        headers = {"x-request-id": usage.client_request_id or usage.request_id}
        if usage.decision is not None:
            headers.update(rate_limit_headers(usage.decision))
        return headers

    # -- the end ---------------------------------------------------------------------------

    async def _settle(self, usage: RequestUsage, status: int) -> None:
        """Record the request (ledger, rate-limit settlement, metrics, log line); once."""
        if usage.closed:
            return
        started = time.monotonic()
        try:
            await self.gateway.close(usage, status)
        finally:
            self.in_flight -= 1
            self.metrics.finished(usage, status, ledger_seconds=time.monotonic() - started)
            log_request(usage, status)

    async def _refuse(self, usage: RequestUsage, error: ApiError) -> Response:
        try:
            await self._settle(usage, error.status)
        except LedgerUnavailable as exc:
            error = _not_recorded(exc)
        return error_response(error, self._headers(usage))

    async def _failed(self, usage: RequestUsage) -> None:
        """A fault of ours (the 500 handler answers): still recorded, once."""
        with anyio.CancelScope(shield=True), contextlib.suppress(LedgerUnavailable):
            await self._settle(usage, 500)

    async def _left(self, usage: RequestUsage, status: int = 499) -> Response:
        """The client left (or the task was cancelled) before the request was settled."""
        if not usage.closed:
            usage.cancelled = True
            with anyio.CancelScope(shield=True), contextlib.suppress(LedgerUnavailable):
                await self._settle(usage, status)
        return Response(status_code=499)
