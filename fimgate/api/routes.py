"""The HTTP routes: FIM completions (run by ``api.serving``), models, health, readiness, metrics.

Each route is served at the hosted gateway's path (``/mistral/{region}/v1/...``), at the bare
Mistral path (``/v1/...``), and both again under the deployment prefix ``/api/public``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from fimgate.api.errors import ApiError
from fimgate.api.metrics import Metrics
from fimgate.api.schemas import FimCompletionRequest, ModelCard, ModelList
from fimgate.api.serving import FimServing, check_region
from fimgate.engines.registry import ModelRegistry, ServedModel, UnknownModel
from fimgate.settings import ServerSettings

DEPLOYMENT_PREFIXES = ("", "/api/public")
# Open to all: a load balancer's probes; /metrics checks its own token.
PUBLIC_PATHS = frozenset(
    f"{prefix}{path}"
    for prefix in DEPLOYMENT_PREFIXES
    for path in ("/health", "/ready", "/metrics")
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


async def fim_completions(request: Request, region: str | None = None) -> Response:
    # The body is read by the serving step (JSON whatever the Content-Type says), so the
    # OpenAPI document gets its schema from openapi_extra below.
    serving: FimServing = request.app.state.serving
    return await serving.complete(request, request.state.principal, region)


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
    models = _registry(request).models
    stats = {m.name: m.engine.stats() for m in models}
    answer: dict[str, object] = {"status": "ok", "models": stats}
    # Where a model runs on upstream servers: each one's state (healthy, draining, in flight).
    if upstreams := {m.name: u for m in models if (u := m.engine.upstreams())}:
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
