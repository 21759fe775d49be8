"""The application factory: settings and models in, an ASGI app out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from anyio.to_thread import run_sync
from fastapi import FastAPI

from fimgate.api.errors import install_error_handlers
from fimgate.api.metrics import Metrics
from fimgate.api.middleware import Authenticate, RefuseBrowserOrigins, StampArrival
from fimgate.api.routes import PUBLIC_PATHS, build_router, refusal_for
from fimgate.api.serving import FimServing
from fimgate.engines.context_memory import ContextMemory
from fimgate.engines.registry import ModelRegistry
from fimgate.gateway.core import Gateway
from fimgate.gateway.keys import KeyStore
from fimgate.settings import ServerSettings

log = logging.getLogger("fimgate.api")

# How often the server asks the store which keys it remembers files of were revoked (keys
# are revoked by another process: `fimgate keys revoke`).
REVOKED_SWEEP_S = 30.0


async def forget_revoked(memory: ContextMemory, keys: KeyStore) -> set[str]:
    """Drops what editor memory holds of keys revoked since; returns their ids."""
    revoked = await run_sync(keys.revoked_among, memory.key_ids())
    for key in revoked:
        memory.forget_key(key)
    return revoked


async def _sweep_revoked(memory: ContextMemory, keys: KeyStore) -> None:
    while True:
        await asyncio.sleep(REVOKED_SWEEP_S)
        try:
            await forget_revoked(memory, keys)
        except Exception:  # a store down now is asked again next time
            log.warning("could not check for revoked keys", exc_info=True)


def create_app(
    settings: ServerSettings, load_models: Callable[[], ModelRegistry], gateway: Gateway
) -> FastAPI:
    """``load_models`` runs at start-up (model loading takes seconds) and its engines are
    closed at shutdown; the server answers nothing, /health included, until they are ready.
    The gateway (keys, limits, ledger) is closed at shutdown too."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.registry = load_models()
        app.state.serving = FimServing(settings, app.state.registry, gateway, app.state.metrics)
        app.state.started = time.time()
        memory = app.state.registry.sessions.context
        sweep = asyncio.create_task(_sweep_revoked(memory, gateway.keys))
        try:
            yield
        finally:
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
            for model in app.state.registry.models:
                await model.engine.aclose()
            await gateway.aclose()

    app = FastAPI(title="fimgate", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.serving = None  # made once the models are loaded
    app.state.metrics = Metrics(
        lambda: getattr(app.state, "registry", None), settings.metrics_token,
        in_flight=lambda: app.state.serving.in_flight if app.state.serving else 0,
    )  # fmt: skip
    install_error_handlers(app)
    app.include_router(build_router())
    # Added innermost first: a request is stamped, meets the origin policy, then auth.
    app.add_middleware(Authenticate, public=PUBLIC_PATHS, refusal_for=refusal_for)
    app.add_middleware(RefuseBrowserOrigins, allowed=settings.allowed_origins)
    app.add_middleware(StampArrival)
    return app
