"""The HTTP routes: FIM completions, the model list, health.

Each route is served at the hosted gateway's path (``/mistral/{region}/v1/...``), at the bare
Mistral path (``/v1/...``), and both again under the deployment prefix ``/api/public``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from fimgate.api.errors import ApiError
from fimgate.api.schemas import (
    AssistantMessage,
    ChatCompletionChoice,
    CompletionChunk,
    DeltaMessage,
    FimCompletionRequest,
    FimCompletionResponse,
    FinishReason,
    ModelCard,
    ModelList,
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
    NeverFits,
    RateLimited,
    RequestUsage,
)

DEPLOYMENT_PREFIXES = ("", "/api/public")


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def _usage(request: Request) -> RequestUsage:
    return request.state.usage  # opened by the Authenticate middleware


def _check_region(request: Request, region: str | None) -> None:
    regions = _settings(request).regions
    if region is not None and region not in regions:
        raise ApiError(
            404,
            f"unknown region {region!r}; this server serves: {', '.join(regions)}",
            code="region_not_found",
        )


def _to_job(body: FimCompletionRequest, settings: Settings, editor: str) -> FimJob:
    return FimJob(
        prefix=body.prompt,
        suffix=body.suffix or "",
        max_tokens=body.token_limit,
        min_tokens=body.min_tokens or 0,
        temperature=settings.default_temperature if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        # llama.cpp seeds are 32-bit and 0xFFFFFFFF means "random": fold larger seeds.
        seed=None if body.random_seed is None else body.random_seed % 0xFFFFFFFF,
        stop=body.stop_list,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        editor=editor,
    )


def _usage_info(done: Finished) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
    )


async def _prepare(
    request: Request, region: str | None, body: FimCompletionRequest
) -> tuple[ServedModel, FimJob, EncodedPrompt]:
    _check_region(request, region)
    try:
        served = _registry(request).resolve(body.model)
    except UnknownModel as exc:
        raise ApiError(404, str(exc), code="model_not_found", param="model") from None
    job = _to_job(body, _settings(request), _usage(request).principal.key_id)
    try:
        prompt = await served.engine.encode(job)
    except PromptTooLong as exc:
        await _gateway(request).observe(_usage(request), served.name, served.aliases)
        raise ApiError(400, str(exc), code="context_length_exceeded", param="prompt") from None
    except EngineError as exc:
        raise _engine_failed(exc) from None
    await _admit(request, served, job, prompt)
    return served, job, prompt


async def _admit(request: Request, served: ServedModel, job: FimJob, prompt: EncodedPrompt) -> None:
    room = served.engine.context_length - prompt.tokens
    max_new = room if job.max_tokens is None else min(job.max_tokens, room)
    try:
        await _gateway(request).admit(
            _usage(request), served.name, prompt.tokens, max_new, served.aliases
        )
    except NeverFits as exc:
        raise ApiError(413, str(exc), code="exceeds_token_rate_limit", param="prompt") from None
    except GatewayUnavailable as exc:
        raise ApiError(503, str(exc), type="service_unavailable") from None
    except RateLimited as exc:
        # The Retry-After and x-ratelimit-* headers come from the Authenticate middleware.
        raise ApiError(429, str(exc), type="rate_limit_error", code="rate_limit_exceeded") from None


def _engine_failed(exc: EngineError) -> ApiError:
    return ApiError(503, f"the model failed: {exc}", type="engine_error")


async def fim_completions(
    request: Request, body: FimCompletionRequest, region: str | None = None
) -> object:
    served, job, prompt = await _prepare(request, region, body)
    usage = _usage(request)
    completion_id = usage.request_id  # the ledger's request id, so the two can be matched
    created = int(time.time())
    if body.stream:
        stream = _sse(request, served, job, prompt, completion_id, created)
        return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)

    text: list[str] = []
    done: Finished | None = None
    try:
        async for event in until_disconnected(request, served.engine.generate(prompt, job)):
            if isinstance(event, Finished):
                done = event
            else:
                text.append(event.text)
                usage.completion_tokens = event.tokens
    except EngineError as exc:
        raise _engine_failed(exc) from None
    if done is None:  # the client went away; nobody reads this
        return JSONResponse({}, status_code=499)
    usage.completion_tokens = done.completion_tokens
    response = FimCompletionResponse(
        id=completion_id,
        model=served.name,
        created=created,
        usage=_usage_info(done),
        choices=[
            ChatCompletionChoice(
                message=AssistantMessage(content="".join(text)), finish_reason=done.finish_reason
            )
        ],
    )
    return JSONResponse(response.model_dump())


async def _sse(
    request: Request,
    served: ServedModel,
    job: FimJob,
    prompt: EncodedPrompt,
    completion_id: str,
    created: int,
) -> AsyncIterator[bytes]:
    def chunk(
        content: str = "", finish_reason: FinishReason | None = None, usage: UsageInfo | None = None
    ) -> bytes:
        return sse_event(
            CompletionChunk(
                id=completion_id,
                created=created,
                model=served.name,
                choices=[
                    StreamChoice(delta=DeltaMessage(content=content), finish_reason=finish_reason)
                ],
                usage=usage,
            )
        )

    first = CompletionChunk(
        id=completion_id,
        created=created,
        model=served.name,
        choices=[StreamChoice(delta=DeltaMessage(role="assistant", content=""))],
    )
    yield sse_event(first)
    usage = _usage(request)
    usage.cancelled = True  # until the engine says it finished
    try:
        async for event in until_disconnected(request, served.engine.generate(prompt, job)):
            if isinstance(event, Finished):
                usage.completion_tokens = event.completion_tokens
                usage.cancelled = False
                yield chunk(finish_reason=event.finish_reason, usage=_usage_info(event))
            else:
                usage.completion_tokens = event.tokens
                yield chunk(event.text)
    except EngineError:
        # Headers are sent already: end the stream with an error finish, as Mistral does.
        usage.cancelled = False
        yield chunk(finish_reason="error")
    # Settled and recorded before [DONE]: a client that saw the end has its ledger row.
    await _gateway(request).close(usage, 200)
    yield SSE_DONE


async def list_models(request: Request, region: str | None = None) -> ModelList:
    _check_region(request, region)
    settings = _settings(request)
    created = int(request.app.state.started)
    return ModelList(
        data=[
            ModelCard(
                id=name,
                created=created,
                name=model.name,
                description=model.description,
                max_context_length=model.engine.context_length,
                aliases=[n for n in (model.name, *model.aliases) if n != name],
                default_model_temperature=settings.default_temperature,
            )
            for model in _registry(request).models
            for name in (model.name, *model.aliases)
        ]
    )


async def health(request: Request) -> dict[str, object]:
    models = _registry(request).models
    stats = {m.name: m.engine.stats() for m in models}
    answer: dict[str, object] = {"status": "ok", "models": stats}
    # Where a model runs on upstream servers: each one's state (healthy, draining, in flight).
    if upstreams := {m.name: m.engine.upstreams() for m in models if m.engine.upstreams()}:
        answer["upstreams"] = upstreams
    return answer


def build_router() -> APIRouter:
    router = APIRouter()
    for prefix in DEPLOYMENT_PREFIXES:
        for path in ("/mistral/{region}/v1", "/v1"):
            router.add_api_route(
                f"{prefix}{path}/fim/completions",
                fim_completions,
                methods=["POST"],
                response_model=None,
            )
            router.add_api_route(f"{prefix}{path}/models", list_models, methods=["GET"])
        # Continue builds its URL with new URL("fim/completions", apiBase): an apiBase
        # written without a trailing slash (".../mistral/eu/v1") loses its "v1".
        router.add_api_route(
            f"{prefix}/mistral/{{region}}/fim/completions",
            fim_completions,
            methods=["POST"],
            response_model=None,
            include_in_schema=False,
        )
        router.add_api_route(f"{prefix}/health", health, methods=["GET"])
    return router
