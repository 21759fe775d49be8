"""docs/editors.md's configurations, as written: each block is read as its editor reads it,
and the requests that editor builds from it (its URL rules, copied from its source: Continue's
``new URL(path, apiBase)``, llama.vscode's ``{endpoint}/infill``, Zed's ``api_url`` as is,
tabby-agent's ``{endpoint}/v1/...``) are answered by the real app (the fast tier)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

from tests.fast_app import FastApp, fast_app

pytestmark = [pytest.mark.fast, pytest.mark.anyio]

DOC = (Path(__file__).resolve().parent.parent / "docs/editors.md").read_text()
FIM = {"prompt": "def add(a, b):\n    ", "suffix": "\n", "max_tokens": 8}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.DOTALL)


def path_of(url: str) -> str:
    assert url.startswith("http://127.0.0.1:8000"), url
    return urlsplit(url).path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[FastApp]:
    # The docs name the default model; the test engine answers to that name.
    async with fast_app(tmp_path, n_ctx=512) as app:
        app.registry.models[0].aliases += ("qwen2.5-coder-1.5b",)
        yield app


async def _continue_model(fast: FastApp, model: dict) -> None:
    """Continue's requests for one configured model (core/llm/llms, openai-adapters)."""
    assert model["apiKey"] == "fg-…"
    base = model["apiBase"]
    roles = model.get("roles", ["chat"])
    calls = []
    if model["provider"] == "ollama":
        calls = [("api/generate", {"model": model["model"], "prompt": "x", "suffix": "y"}),
                 ("api/chat", {"model": model["model"], "messages": CHAT["messages"]})]  # fmt: skip
    else:
        if "autocomplete" in roles:
            calls.append(("fim/completions", {"model": model["model"], **FIM}))
        if {"chat", "edit", "apply"} & set(roles):
            calls.append(("chat/completions", {"model": model["model"], **CHAT}))
    assert calls, model
    for relative, body in calls:
        response = await fast.post(body, url=path_of(urljoin(base, relative)))
        assert response.status_code == 200, (model.get("title"), relative)


async def test_continue_configs(fast: FastApp) -> None:
    configs = [yaml.safe_load(block) for block in blocks("yaml")]
    models = [m for config in configs for m in config["models"]]
    assert {m["provider"] for m in models} == {"mistral", "ollama"}
    legacy = json.loads(blocks("json")[0])
    models += [*legacy["models"], {**legacy["tabAutocompleteModel"], "roles": ["autocomplete"]}]
    for model in models:
        await _continue_model(fast, model)


async def test_llama_vscode_and_llama_vim(fast: FastApp) -> None:
    settings = json.loads(next(b for b in blocks("json") if "llama-vscode" in b))
    endpoint = settings["llama-vscode.endpoint"]
    body = {"input_prefix": "def f(", "input_suffix": ")\n", "n_predict": 8}
    assert (await fast.post(body, url=path_of(f"{endpoint}/infill"))).status_code == 200
    chat = path_of(f"{settings['llama-vscode.endpoint_chat']}/v1/chat/completions")
    asked = {"model": settings["llama-vscode.ai_model"], **CHAT}
    assert (await fast.post(asked, url=chat)).status_code == 200
    vim = blocks("vim")[0]
    fim_url = re.search(r"'endpoint_fim': '([^']+)'", vim).group(1)  # type: ignore[union-attr]
    assert (await fast.post(body, url=path_of(fim_url))).status_code == 200


async def test_zed(fast: FastApp) -> None:
    settings = json.loads(next(b for b in blocks("json") if "edit_predictions" in b))
    zed = settings["edit_predictions"]["open_ai_compatible_api"]
    assert settings["edit_predictions"]["provider"] == "open_ai_compatible_api"
    assert zed["prompt_format"] == "qwen"
    body = {"model": zed["model"], "prompt": "<|fim_prefix|>def f(<|fim_suffix|>)<|fim_middle|>",
            "max_tokens": zed["max_output_tokens"], "stop": ["<|endoftext|>"]}  # fmt: skip
    answer = (await fast.post(body, url=path_of(zed["api_url"]))).json()
    # Zed parses the answer strictly (RawCompletionResponse): all of these are required.
    assert {"id", "object", "created", "model", "choices", "usage"} <= answer.keys()
    assert isinstance(answer["choices"][0]["text"], str)


async def test_tabby(fast: FastApp) -> None:
    server = tomllib.loads(blocks("toml")[0])["server"]
    assert server["token"] == "fg-…"
    auth = {"Authorization": f"Bearer {fast.key}"}
    health = await fast.client.get(path_of(f"{server['endpoint']}/v1/health"), headers=auth)
    assert health.json()["model"]
    body = {"language": "python", "segments": {"prefix": "def f(", "suffix": ")"}}
    url = path_of(f"{server['endpoint']}/v1/completions")
    assert (await fast.post(body, url=url)).json()["choices"][0]["text"]
