"""The real app over the test engine (tests/engine_double.py), for the fast tier: a real
SQLite ledger in a temporary folder, the real rate limiter (on a clock the test moves), the
real middleware and serving step, reached in-process through ``httpx.ASGITransport``.

ASGITransport hands back a response only once it is whole, so ``disconnecting`` drives the
app as a server would for a client that leaves: it sends ``http.disconnect`` when told.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fimgate.api.app import create_app
from fimgate.engines.fim_engine import FimEngine
from fimgate.engines.loading import CODESTRAL_ALIASES
from fimgate.engines.registry import ModelRegistry, ServedModel
from fimgate.engines.sessions import EditorSessions
from fimgate.gateway.bootstrap import ensure_first_key, open_gateway
from fimgate.gateway.core import Gateway
from fimgate.gateway.ratelimit import MemoryRateLimiter
from fimgate.gateway.usage import UsageRow
from fimgate.settings import Settings
from tests.clock import Clock
from tests.engine_double import ScriptedTransport

MODEL = "test-model"
URL = "/v1/fim/completions"


@dataclass
class FastApp:
    client: httpx.AsyncClient
    app: Any
    key: str
    gateway: Gateway
    transport: ScriptedTransport
    registry: ModelRegistry
    clock: Clock
    keys: dict[str, str] = field(default_factory=dict)

    def rows(self, workspace: str | None = None) -> list[UsageRow]:
        return self.gateway.ledger.rows(workspace)

    def workspace(self, name: str, rpm: int | None = None, tpm: int | None = None) -> str:
        """A new workspace with these limits; a key of it."""
        self.gateway.keys.create_workspace(name)
        if rpm or tpm:
            self.gateway.limits.set(name, None, rpm, tpm)
        _, key = self.gateway.keys.create_key(name)
        self.keys[name] = key
        return key

    async def post(self, body: dict[str, Any], key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}", **kw.pop("headers", {})}
        return await self.client.post(kw.pop("url", URL), json=body, headers=headers, **kw)

    def scope(
        self, body: dict[str, Any], key: str | None = None, url: str = URL
    ) -> tuple[dict, bytes]:
        raw = json.dumps(body).encode()
        headers = [(b"authorization", f"Bearer {key or self.key}".encode()),
                   (b"content-type", b"application/json")]  # fmt: skip
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": url, "raw_path": url.encode(), "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 5000), "server": ("test", 80),
            "root_path": "", "app": self.app,
        }  # fmt: skip
        return scope, raw

    async def disconnecting(
        self, body: dict[str, Any], gone: asyncio.Event, key: str | None = None, url: str = URL
    ) -> list[dict]:
        """Send ``body``; the client leaves once ``gone`` is set. Returns what the app sent."""
        scope, raw = self.scope(body, key, url)
        sent: list[dict] = []
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return sent


def sse_events(messages: list[dict]) -> list[dict]:
    """The JSON events of an SSE body the app sent (``[DONE]`` as {"done": True})."""
    text = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    events = []
    for line in text.decode().splitlines():
        if line == "data: [DONE]":
            events.append({"done": True})
        elif line.startswith("data: "):
            events.append(json.loads(line[6:]))
    return events


@contextlib.asynccontextmanager
async def fast_app(folder: Path, **settings: Any) -> AsyncIterator[FastApp]:
    """The app started (its lifespan run) with ``settings`` over the test engine."""
    clock = Clock()
    config = Settings.load(data_dir=folder, models=[MODEL], **settings)
    gateway = open_gateway(config.gateway, config.store)
    if not config.store.redis_url:  # else the real Redis limiter, on Redis's own clock
        gateway.limiter = MemoryRateLimiter(clock=clock)
    ensure_first_key(gateway.keys, config.first_key_file)
    key = config.first_key_file.read_text().strip()
    transport = ScriptedTransport(context_length=config.engine.n_ctx)
    registry = ModelRegistry(sessions=EditorSessions(clock=clock))
    engine = FimEngine(transport, config.engine, registry.sessions)
    registry.add(ServedModel(MODEL, engine, aliases=CODESTRAL_ALIASES))
    app = create_app(config.server, lambda: registry, gateway)
    async with app.router.lifespan_context(app):
        asgi = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=asgi, base_url="http://test") as client:
            yield FastApp(client, app, key, gateway, transport, registry, clock)
