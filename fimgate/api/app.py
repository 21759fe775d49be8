"""The application factory: settings and models in, an ASGI app out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fimgate.api.errors import install_error_handlers
from fimgate.api.routes import build_router
from fimgate.config import Settings
from fimgate.engines.registry import ModelRegistry


def create_app(settings: Settings, load_models: Callable[[], ModelRegistry]) -> FastAPI:
    """``load_models`` runs at start-up (model loading takes seconds) and its engines are
    closed at shutdown; the server answers nothing, /health included, until they are ready."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.registry = load_models()
        app.state.started = time.time()
        try:
            yield
        finally:
            for model in app.state.registry.models:
                await model.engine.aclose()

    app = FastAPI(title="fimgate", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(build_router())
    return app
