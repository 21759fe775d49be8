"""Real clients against a real server: the official mistralai SDK and Continue's adapter."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from mistralai.client import Mistral

PREFIX = "def fibonacci(n):\n    "
SUFFIX = "\n\nprint(fibonacci(10))\n"
CONTINUE_DIR = Path(__file__).parent / "continue"


@pytest.fixture
def sdk(server) -> Mistral:
    return Mistral(api_key=server.key, server_url=f"{server.url}/mistral/eu")


def test_sdk_complete(sdk: Mistral) -> None:
    res = sdk.fim.complete(
        model="codestral-latest", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0
    )
    assert res.object == "chat.completion"
    assert res.model == "qwen2.5-coder-0.5b"
    choice = res.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert res.usage.prompt_tokens > 3  # the three FIM markers plus real text
    assert 0 < res.usage.completion_tokens <= 16
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens


def test_sdk_stream_matches_complete(sdk: Mistral) -> None:
    kwargs = dict(
        model="codestral-2501", prompt=PREFIX, suffix=SUFFIX, max_tokens=12, temperature=0
    )
    whole = sdk.fim.complete(**kwargs)
    events = list(sdk.fim.stream(**kwargs))
    chunks = [e.data for e in events]
    assert all(isinstance(c.choices[0].delta.content, str) for c in chunks)
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    streamed = "".join(c.choices[0].delta.content for c in chunks)
    assert streamed == whole.choices[0].message.content


def test_sdk_lists_models(sdk: Mistral) -> None:
    ids = {m.id for m in sdk.models.list().data}
    assert {"qwen2.5-coder-0.5b", "codestral-latest", "codestral-2501", "codestral-2405"} <= ids


def test_sdk_retrieves_a_model(sdk: Mistral) -> None:
    card = sdk.models.retrieve(model_id="codestral-latest")
    assert card.id == "codestral-latest" and card.capabilities.completion_fim
    assert "qwen2.5-coder-0.5b" in card.aliases
    with pytest.raises(Exception, match="404"):
        sdk.models.retrieve(model_id="no-such-model")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("api_base", ["/mistral/eu/v1/", "/api/public/mistral/eu/v1/"])
def test_continue_adapter_fim_stream(server, sdk: Mistral, api_base: str) -> None:
    assert (CONTINUE_DIR / "node_modules").exists(), "run npm ci in tests/continue (.ci/run does)"
    body = {
        "model": "codestral-latest",
        "prompt": PREFIX,
        "suffix": SUFFIX,
        "max_tokens": 12,
        "temperature": 0,
    }
    arg = json.dumps({"apiBase": server.url + api_base, "apiKey": server.key, "body": body})
    out = subprocess.run(
        ["node", "fim_stream.mjs", arg],
        cwd=CONTINUE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    expected = sdk.fim.complete(**body).choices[0].message.content
    assert result["text"] == expected
    assert result["finish"] in ("stop", "length")
