"""The server's own bound on reading a request's headers (api/http_protocol.py): a real
uvicorn on 127.0.0.1 with fimgate's protocol, over the fast tier's app, and raw sockets that
send headers a piece at a time, or nothing. pytest-timeout is the net for a hang; nothing
here asserts a duration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from fimgate.api.http_protocol import with_header_deadline
from fimgate.local_process import free_port
from tests.fast_app import FastApp, fast_app

pytestmark = [pytest.mark.fast, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[FastApp, int]]:
    async with fast_app(tmp_path, n_ctx=512) as app:
        port = free_port()
        protocol = with_header_deadline(0.3, app.app.state.metrics.headers_late.inc)
        config = uvicorn.Config(
            app.app, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_config=None
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        yield app, port
        server.should_exit = True
        await task


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict]:
    raw = await reader.read()  # to the end: the server closes the connection
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_headers_sent_a_byte_at_a_time_get_a_408_and_the_connection_closed(
    served: tuple[FastApp, int],
) -> None:
    app, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\n")
    trickle = b"Authorization: Bearer " + app.key.encode()

    async def send_slowly() -> None:
        for byte in trickle:  # never the blank line that ends the headers
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(send_slowly())
    status, body = await _answer(reader)
    sender.cancel()
    writer.close()
    assert status == 408 and body["code"] == "request_timeout"
    assert app.rows() == []  # no request was read: nothing to record
    metrics = (await app.client.get("/metrics")).text
    assert "fimgate:connections_headers_late_total 1.0" in metrics


async def test_a_connection_that_sends_nothing_is_closed(served: tuple[FastApp, int]) -> None:
    _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status, body = await _answer(reader)
    writer.close()
    assert status == 408 and body["object"] == "error"


async def test_a_kept_alive_connection_answers_and_then_bounds_the_next_headers(
    served: tuple[FastApp, int],
) -> None:
    """A whole request is answered on time (the deadline is on the headers only); the next
    one on the same connection gets its own deadline."""
    app, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"model": "codestral-latest", "prompt": "def f(", "suffix": ""}).encode()
    writer.write(
        b"POST /v1/fim/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + app.key.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))  # fmt: skip
    await reader.readexactly(length)
    writer.write(b"POST /v1/fim/completions HTTP/1.1\r\n")  # and no more
    status, _ = await _answer(reader)
    writer.close()
    assert status == 408
