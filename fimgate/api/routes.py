"""The HTTP routes: completions on every wire (each run by ``api.serving``), models, health,
readiness, metrics, and the probes editors make.

Each route is served at the hosted gateway's path (``/mistral/{region}/v1/...``, and
``/openai/{region}/v1/...`` for OpenAI's wire), at the bare path (``/v1/...``), and all again
under the deployment prefix ``/api/public``. The other editors' wires are at the paths their
servers use: llama.cpp's ``/infill``, Ollama's ``/api/...``, Tabby's ``/v1/...``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fimgate.api.errors import ApiError
from fimgate.api.metrics import Metrics
from fimgate.api.request_body import parse_body
from fimgate.api.schemas import FimCompletionRequest, ModelCard, ModelList
from fimgate.api.serving import FimServing, check_region
from fimgate.api.wires import (
    ErrorWriter,
    chat,
    infill,
    mistral_fim,
    ollama,
    openai_completions,
    tabby,
)
from fimgate.api.wires import refusal_for as wire_refusal
from fimgate.api.wires.base import Wire
from fimgate.engines.registry import ModelRegistry, ServedModel, UnknownModel
from fimgate.settings import ServerSettings

DEPLOYMENT_PREFIXES = ("", "/api/public")
# Open to all: a load balancer's probes, Ollama's version probe; /metrics checks its own token.
PUBLIC_PATHS = frozenset(
    f"{prefix}{path}"
    for prefix in DEPLOYMENT_PREFIXES
    for path in ("/health", "/ready", "/metrics", "/api/version")
)
_FIM_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": FimCompletionRequest.model_json_schema()}},
    }
}


def _settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def refusal_for(path: str) -> tuple[ErrorWriter, str]:
    """The middleware's refusal for ``path``: its wire's (api/wires), the prefix left out."""
    for prefix in DEPLOYMENT_PREFIXES[1:]:
        path = path.removeprefix(prefix)
    return wire_refusal(path)


def _completions(wire: Wire) -> Callable[..., Awaitable[Response]]:
    async def complete(request: Request, region: str | None = None) -> Response:
        # The body is read by the serving step (JSON whatever the Content-Type says), so the
        # OpenAPI document gets its schema from openapi_extra.
        serving: FimServing = request.app.state.serving
        return await serving.complete(request, request.state.principal, region, wire)

    complete.__name__ = wire.name
    return complete


fim_completions = _completions(mistral_fim.WIRE)


def _model_card(request: Request, model: ServedModel, name: str) -> ModelCard:
    return ModelCard(
        id=name,
        created=int(request.app.state.started),
        name=model.name,
        description=model.description,
        max_context_length=model.engine.context_length,
        aliases=[n for n in (model.name, *model.aliases) if n != name],
        default_model_temperature=_settings(request).default_temperature,
    )


async def list_models(request: Request, region: str | None = None) -> ModelList:
    check_region(_settings(request).regions, region)
    return ModelList(
        data=[
            _model_card(request, model, name)
            for model in _registry(request).models
            for name in (model.name, *model.aliases)
        ]
    )


async def retrieve_model(request: Request, model_id: str, region: str | None = None) -> ModelCard:
    """``models.retrieve`` in both Mistral SDKs: one card, by any name the model answers to."""
    check_region(_settings(request).regions, region)
    try:
        model = _registry(request).resolve(model_id)
    except UnknownModel as exc:
        raise ApiError(404, str(exc), code="model_not_found", param="model_id") from None
    return _model_card(request, model, model_id)


def _models_ready(registry: ModelRegistry) -> str:
    """Each model loaded; one answering from upstream servers needs one healthy among them."""
    for model in registry.models:
        upstreams = model.engine.upstreams()
        if upstreams and not any(u.get("healthy") for u in upstreams):
            return f"{model.name}: no healthy upstream"
    return "ok"


async def ready(request: Request) -> JSONResponse:
    """Readiness for a load balancer: 200 only while this replica should get traffic."""
    serving: FimServing = request.app.state.serving
    checks = {"models": _models_ready(_registry(request))}
    checks.update(await serving.gateway.reachable())
    checks["draining"] = "no" if not serving.draining else "yes: shutting down"
    ok = checks["draining"] == "no" and all(
        value == "ok" for name, value in checks.items() if name != "draining"
    )
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "5"},
    )


async def metrics(request: Request) -> Response:
    exporter: Metrics = request.app.state.metrics
    exporter.allowed(request)
    return exporter.response()


async def health(request: Request) -> dict[str, object]:
    """Liveness, and what is in flight, from the sources /metrics reads: the requests not yet
    settled, and per model the engine's counters ('active': its jobs running, one whose client
    left until the engine's next step)."""
    models = _registry(request).models
    stats = {m.name: m.engine.stats() for m in models}
    serving: FimServing = request.app.state.serving
    answer: dict[str, object] = {
        "status": "ok", "requests_in_flight": serving.in_flight, "models": stats,
    }  # fmt: skip
    # Where a model runs on upstream servers: each one's state (healthy, draining, in flight).
    if upstreams := {m.name: u for m in models if (u := m.engine.upstreams())}:
        answer["upstreams"] = upstreams
    return answer


def build_router() -> APIRouter:
    router = APIRouter()
    completions = _completions(openai_completions.WIRE)
    openai_chat, mistral_chat = _completions(chat.OPENAI), _completions(chat.MISTRAL)
    for prefix in DEPLOYMENT_PREFIXES:
        for path in ("/openai/{region}/v1", "/v1"):
            # OpenAI's legacy completions, and Tabby's at the same path (the body tells).
            router.add_api_route(
                f"{prefix}{path}/completions", completions, methods=["POST"], response_model=None
            )
            router.add_api_route(
                f"{prefix}{path}/chat/completions", openai_chat, methods=["POST"],
                response_model=None,
            )  # fmt: skip
        for path in ("/mistral/{region}/v1", "/mistral/{region}"):  # the second: see below
            router.add_api_route(
                f"{prefix}{path}/chat/completions", mistral_chat, methods=["POST"],
                response_model=None, include_in_schema=path.endswith("/v1"),
            )  # fmt: skip
        router.add_api_route(f"{prefix}/openai/{{region}}/v1/models", list_models, methods=["GET"])
        _editor_routes(router, prefix)
        for path in ("/mistral/{region}/v1", "/v1"):
            router.add_api_route(
                f"{prefix}{path}/fim/completions",
                fim_completions,
                methods=["POST"],
                response_model=None,
                openapi_extra=_FIM_BODY,
            )
            router.add_api_route(f"{prefix}{path}/models", list_models, methods=["GET"])
            router.add_api_route(
                f"{prefix}{path}/models/{{model_id}}", retrieve_model, methods=["GET"]
            )
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
        router.add_api_route(f"{prefix}/ready", ready, methods=["GET"])
        router.add_api_route(f"{prefix}/metrics", metrics, methods=["GET"], include_in_schema=False)
    return router


# -- the probes of other editors ----------------------------------------------------------------


async def tabby_health(request: Request) -> dict[str, object]:
    # Tabby names no model: its completions get the first (api/serving.py), so its health does.
    return tabby.health(_registry(request).models[0].name, request.app.version)


async def tabby_server_setting(_: Request) -> dict[str, object]:
    return {"disable_client_side_telemetry": False}


async def tabby_events(_: Request) -> Response:
    # tabby-agent reports views and selections; a failing call makes it re-check health.
    return Response(status_code=200)


def _ollama_models(request: Request) -> list[tuple[str, ServedModel]]:
    return [(name, m) for m in _registry(request).models for name in (m.name, *m.aliases)]


async def ollama_tags(request: Request) -> dict[str, object]:
    started = datetime.fromtimestamp(request.app.state.started, UTC)
    return {"models": [ollama.tag(name, started) for name, _ in _ollama_models(request)]}


async def ollama_show(request: Request) -> Response:
    try:
        wanted = parse_body(await request.body(), ollama.ShowRequest).wanted()
        model = _registry(request).resolve(wanted)
    except UnknownModel as exc:
        return ollama.error(ApiError(404, f"model '{exc.requested}' not found"))
    except ApiError as exc:
        return ollama.error(exc)
    started = datetime.fromtimestamp(request.app.state.started, UTC)
    return JSONResponse(ollama.show(model.engine.context_length, started))


async def ollama_version(_: Request) -> dict[str, str]:
    return {"version": ollama.OLLAMA_VERSION}


def _editor_routes(router: APIRouter, prefix: str) -> None:
    """The paths other editors' servers use: llama.cpp's, Ollama's, Tabby's."""
    add = router.add_api_route
    add(f"{prefix}/infill", _completions(infill.WIRE), methods=["POST"], response_model=None)
    add(f"{prefix}/api/generate", _completions(ollama.WIRE), methods=["POST"],
        response_model=None)  # fmt: skip
    add(f"{prefix}/api/chat", _completions(ollama.CHAT_WIRE), methods=["POST"],
        response_model=None)  # fmt: skip
    add(f"{prefix}/api/tags", ollama_tags, methods=["GET"])
    add(f"{prefix}/api/show", ollama_show, methods=["POST"], response_model=None)
    add(f"{prefix}/api/version", ollama_version, methods=["GET"])
    add(f"{prefix}/v1/health", tabby_health, methods=["GET", "POST"])
    add(f"{prefix}/v1/events", tabby_events, methods=["POST"], response_model=None)
    add(f"{prefix}/v1beta/server_setting", tabby_server_setting, methods=["GET"])
