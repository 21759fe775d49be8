"""Chat through the one request path (the fast tier: the real app, gateway and engine above a
stand-in model whose chat handler streams as llama.cpp's does): OpenAI's and Mistral's
shapes, tools, Ollama's chat, the same keys, limits and ledger as FIM, cancels, and
keystrokes first (a model answers ``chat_slots`` chats at once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fimgate.api.wires.chat import SAFE_PROMPT
from tests.fast_app import MODEL, FastApp, fast_app, sse_events

pytestmark = [pytest.mark.fast, pytest.mark.anyio]

CHAT = {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "add two numbers"}]}  # fmt: skip
TOOL = {"type": "function", "function": {"name": "run", "parameters": {"type": "object"}}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[FastApp]:
    async with fast_app(tmp_path, n_ctx=512) as app:
        yield app


def _events(body: bytes) -> list[dict]:
    return sse_events([{"type": "http.response.body", "body": body}])


async def test_openai_chat_whole_and_streamed(fast: FastApp) -> None:
    answer = (await fast.post(CHAT, url="/v1/chat/completions")).json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "return a + b\n"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    # Charged the engine's count at the end, not admission's estimate.
    assert answer["usage"]["prompt_tokens"] == len("Be brief.add two numbers") + 7
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    events = _events((await fast.post(stream, url="/openai/eu/v1/chat/completions")).content)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1] == {"done": True} and events[-2]["choices"] == []
    assert events[-2]["usage"] == answer["usage"]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == "return a + b\n"
    rows = fast.rows()
    assert [r.route for r in rows] == ["chat", "chat"]
    assert rows[0].prompt_tokens == answer["usage"]["prompt_tokens"]


async def test_mistral_chat_has_usage_in_its_last_chunk_and_its_own_fields(
    fast: FastApp,
) -> None:
    body = {**CHAT, "stream": True, "random_seed": 7, "safe_prompt": True}
    events = _events((await fast.post(body, url="/mistral/eu/v1/chat/completions")).content)
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-2]["usage"]
    sent = fast.transport.chats[-1]
    # The guardrail goes first in the one system prompt (templates take one, first).
    system = {"role": "system", "content": f"{SAFE_PROMPT}\nBe brief."}
    assert sent["seed"] == 7 and sent["messages"][0] == system and len(sent["messages"]) == 2


async def test_tools_go_to_the_engine_and_calls_come_back_whole(fast: FastApp) -> None:
    body = {**CHAT, "tools": [TOOL], "tool_choice": "auto"}
    answer = (await fast.post(body, url="/v1/chat/completions")).json()
    assert fast.transport.chats[-1]["tools"] == [TOOL]
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "run", "arguments": '{"x": 1}'}}
    ]
    events = _events(
        (await fast.post({**body, "stream": True}, url="/v1/chat/completions")).content
    )
    pieces = [e["choices"][0]["delta"]["tool_calls"] for e in events[:-1]
              if e["choices"][0]["delta"].get("tool_calls")]  # fmt: skip
    assert "".join(p[0]["function"]["arguments"] for p in pieces) == '{"x": 1}'


async def test_chat_refusals(fast: FastApp) -> None:
    cases = [
        ({**CHAT, "n": 2}, 422, "n:"),
        ({**CHAT, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "x"}}]}]}, 422, "messages.0.content"),
        ({**CHAT, "messages": []}, 422, "messages"),
        ({**CHAT, "messages": [{"role": "user", "content": "x" * 600}]}, 400, "context"),
    ]  # fmt: skip
    for body, status, words in cases:
        response = await fast.post(body, url="/v1/chat/completions")
        assert response.status_code == status and words in response.json()["message"], body
    assert (await fast.client.post("/v1/chat/completions", json=CHAT)).status_code == 401


async def test_chat_and_fim_share_the_model_s_limits(fast: FastApp) -> None:
    key = fast.workspace("tight", rpm=2)
    fim = {"model": MODEL, "prompt": "def f(", "suffix": ")"}
    assert (await fast.post(fim, key=key)).status_code == 200
    assert (await fast.post(CHAT, key=key, url="/v1/chat/completions")).status_code == 200
    limited = await fast.post(CHAT, key=key, url="/v1/chat/completions")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limit_exceeded"


async def test_a_chat_left_midway_is_cancelled_and_charged(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at = 3
    body = {**CHAT, "stream": True}
    sent = await fast.disconnecting(body, gone=script.reached, url="/v1/chat/completions")
    assert sent[0]["status"] == 200
    (row,) = fast.rows()
    assert row.route == "chat" and row.cancelled and row.completion_tokens == 3


async def test_keystrokes_go_on_while_a_chat_runs_and_the_next_chat_waits(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at = 2
    first = asyncio.create_task(fast.post(CHAT, url="/v1/chat/completions"))
    await script.reached.wait()
    script.hold_at = -1  # the first chat stays held; nothing else is
    second = asyncio.create_task(fast.post(CHAT, url="/v1/chat/completions"))
    fim = await fast.post({"model": MODEL, "prompt": "def f(", "suffix": ")"})
    assert fim.status_code == 200  # autocomplete did not wait for the chat
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(fast.transport.chats) == 1 and not second.done()  # chat_slots 1: it waits
    script.resume.set()
    assert (await first).status_code == 200 and (await second).status_code == 200
    assert len(fast.transport.chats) == 2


async def test_no_chat_where_chat_slots_is_zero(tmp_path: Path) -> None:
    async with fast_app(tmp_path, n_ctx=512, chat_slots=0) as fast:
        response = await fast.post(CHAT, url="/v1/chat/completions")
        assert response.status_code == 400 and "FIMGATE_CHAT_SLOTS" in response.json()["message"]


async def test_ollama_chat_streams_ndjson_with_tool_calls_in_ollama_s_shape(
    fast: FastApp,
) -> None:
    body = {"model": f"{MODEL}:latest", "messages": CHAT["messages"], "tools": [TOOL]}
    response = await fast.post(body, url="/api/chat")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == "return a + b\n"
    last = lines[-1]
    assert last["done"] and last["done_reason"] == "stop" and last["eval_count"] > 0
    assert last["message"]["tool_calls"] == [{"function": {"name": "run", "arguments": {"x": 1}}}]
    whole = (await fast.post({**body, "stream": False, "tools": None}, url="/api/chat")).json()
    assert whole["message"] == {"role": "assistant", "content": "return a + b\n"}
    assert [r.route for r in fast.rows()] == ["ollama_chat", "ollama_chat"]
