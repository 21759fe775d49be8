"""Server-sent events, and ending work the moment a client goes away.

Editors cancel a completion on nearly every keystroke. Starlette notices a vanished client
only when it next writes, and not at all while the model is still reading the prompt, so
``until_disconnected`` watches the connection itself and stops the engine at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DONE = b"data: [DONE]\n\n"


def sse_event(chunk: BaseModel) -> bytes:
    return b"data: " + chunk.model_dump_json().encode() + b"\n\n"


def compact(body: dict[str, Any]) -> bytes:
    """JSON on one line, no spaces (llama.vim matches '"content":"' in it)."""
    return json.dumps(body, separators=(",", ":")).encode()


def sse_json(body: dict[str, Any]) -> bytes:
    return b"data: " + compact(body) + b"\n\n"


def ndjson(body: dict[str, Any]) -> bytes:
    return compact(body) + b"\n"


async def _disconnected(request: Request) -> None:
    # The body has been read already, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """Yield from ``events`` until they end or the client disconnects; then close ``events``."""
    watcher = asyncio.ensure_future(_disconnected(request))
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))  # type: ignore[arg-type]
            await asyncio.wait({step, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():  # the client left
                return
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        watcher.cancel()
        if step is not None and not step.done():
            # Cancelling the pending step raises inside the engine's generator, which stops
            # generation; this also runs when our own task is cancelled.
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await step
        await events.aclose()  # type: ignore[attr-defined]
