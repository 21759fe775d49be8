"""The other editors' wires with their real clients where one is packaged (the openai SDK, the
ollama Python client), and the editors' own JSON where none is (llama.vscode 3938fb3 and
llama.vim a1c8e6e for /infill, tabby-agent at TabbyML/tabby 21b2904), against a real server
and the real model: each gets a completion whole and streamed, the same whichever way it
came, a refusal its client understands, and a ledger row with its route. (Cancels, 429s and
every field's refusal are the fast tier's: tests/test_fast_wires.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from mistralai.client import Mistral

from tests.conftest import TEST_MODEL, Server

PREFIX = "def fibonacci(n):\n    "
SUFFIX = "\n\nprint(fibonacci(10))\n"


def _routes(server: Server) -> dict[str, str]:
    return {r["request_id"]: r["route"] for r in json.loads(server.cli("usage", "--json"))}


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(api_key=server.key, base_url=f"{server.url}/openai/eu/v1")


def _fim(server: Server, max_tokens: int) -> str:
    with server.client() as http:
        body = {"model": TEST_MODEL, "prompt": PREFIX, "suffix": SUFFIX,
                "max_tokens": max_tokens, "temperature": 0}  # fmt: skip
        answer = http.post("/v1/fim/completions", json=body).json()
    return answer["choices"][0]["message"]["content"]


def test_openai_sdk_completions_with_suffix(server: Server, oai: openai.OpenAI) -> None:
    kwargs = dict(model=TEST_MODEL, prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0)
    whole = oai.completions.create(**kwargs)
    assert whole.object == "text_completion" and whole.choices[0].text.strip()
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert whole.choices[0].text == _fim(server, 16)  # one job, whichever wire
    stream = oai.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert _routes(server)[whole.id] == "completions"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="fg-no-such-key", base_url=f"{server.url}/v1").completions.create(
            **kwargs
        )
    with pytest.raises(openai.UnprocessableEntityError, match="one completion"):
        oai.completions.create(**kwargs, n=2)


def test_ollama_client_generate_with_suffix(server: Server) -> None:
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {server.key}"})
    options = {"num_predict": 16, "temperature": 0}
    whole = client.generate(model=TEST_MODEL, prompt=PREFIX, suffix=SUFFIX, options=options)
    assert whole.done and whole.response == _fim(server, 16)
    assert whole.prompt_eval_count > 3 and 0 < whole.eval_count <= 16
    parts = list(client.generate(model=f"{TEST_MODEL}:latest", prompt=PREFIX, suffix=SUFFIX,
                                 options=options, stream=True))  # fmt: skip
    assert "".join(p.response for p in parts) == whole.response and parts[-1].done
    assert TEST_MODEL in [m.model for m in client.list().models]
    assert ".Suffix" in client.show(TEST_MODEL).template
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).generate(model=TEST_MODEL, prompt=PREFIX)
    assert refused.value.status_code == 401 and "OLLAMA_API_KEY" in refused.value.error
    assert "ollama" in _routes(server).values()


def test_llama_vscode_infill_and_its_warm_up(server: Server) -> None:
    chunk = {"text": "def lucas(n):\n    return 2 if n == 0 else 1\n", "time": 1733000000000,
             "filename": "/home/me/proj/seq.py"}  # fmt: skip
    body = {
        "id_slot": 0, "input_prefix": "def fibonacci(n):\n", "input_suffix": SUFFIX,
        "input_extra": [chunk], "prompt": "    ", "n_predict": 16, "n_cmpl": 3, "top_k": 40,
        "top_p": 0.99, "stream": False, "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True, "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 500,
        "model": "google/gemini-2.5-flash",
    }  # fmt: skip
    warm = {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": [chunk],
            "prompt": "", "n_predict": 0, "samplers": [], "cache_prompt": True,
            "t_max_prompt_ms": 500, "t_max_predict_ms": 1}  # fmt: skip
    with server.client() as http:
        assert http.post("/infill", json=warm).json()["content"] == ""
        cached = server.stats()["prompt_tokens_computed"]
        answer = http.post("/infill", json=body)
        # The warm-up's chunk was read once: the completion reads only what follows it.
        computed = server.stats()["prompt_tokens_computed"] - cached
        # llama.vim's "Authorization: Bearer " (its empty default key), as a server reads it:
        # trailing white space is not part of a header's value.
        missing = httpx.post(f"{server.url}/infill", json=body,
                             headers={"Authorization": "Bearer"})  # fmt: skip
    assert answer.status_code == 200 and '"content":"' in answer.text
    result = answer.json()
    assert result["content"].strip() and result["generation_settings"]["n_predict"] == 16
    assert computed < result["tokens_evaluated"] - 15
    assert missing.status_code == 401
    assert "llama-vscode.api_key" in missing.json()["error"]["message"]
    assert sorted(_routes(server).values()).count("infill_warm") >= 1


def test_llama_vscode_infill_stream_is_the_same_completion(server: Server) -> None:
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 16}
    with server.client() as http:
        whole = http.post("/infill", json=body).json()
        streamed = http.post("/infill", json={**body, "stream": True}).text
    events = [json.loads(e[6:]) for e in streamed.split("\n\n") if e.startswith("data: ")]
    assert "".join(e["content"] for e in events) == whole["content"] == _fim(server, 16)
    assert events[-1]["stop"] is True


LUCAS = "def lucas(n):\n    if n == 0:\n        return 2\n    return lucas(n - 1) + lucas(n - 2)\n"


def test_tabby_agent_completion(server: Server) -> None:
    body = {"language": "python", "segments": {
        "prefix": PREFIX, "suffix": SUFFIX, "filepath": "seq/fib.py",
        "git_url": "https://github.com/me/seq.git",
        "relevant_snippets_from_recently_opened_files": [
            {"filepath": "seq/lucas.py", "body": LUCAS, "score": 1}],
    }}  # fmt: skip
    with server.client() as http:
        health = http.get("/v1/health").json()
        answer = http.post("/v1/completions", json=body).json()
    assert health["model"] == TEST_MODEL and health["version"]["git_describe"]
    assert answer["choices"][0]["text"].strip()
    assert _routes(server)[answer["id"]] == "tabby"


# -- chat: Continue's chat and edit roles, the SDKs -------------------------------------------

QUESTION = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
CONTINUE_DIR = Path(__file__).parent / "continue"


def test_openai_sdk_chat_whole_and_streamed(server: Server, oai: openai.OpenAI) -> None:
    kwargs = dict(model="codestral-latest", messages=QUESTION, max_tokens=24, temperature=0)
    whole = oai.chat.completions.create(**kwargs)
    text = whole.choices[0].message.content
    assert text.strip() and whole.choices[0].finish_reason in ("stop", "length")
    assert 0 < whole.usage.completion_tokens <= 24 and whole.usage.prompt_tokens > 10
    chunks = list(oai.chat.completions.create(**kwargs, stream=True,
                                              stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert _routes(server)[whole.id] == "chat"


def test_mistral_sdk_chat(server: Server) -> None:
    sdk = Mistral(api_key=server.key, server_url=f"{server.url}/mistral/eu")
    kwargs = dict(model=TEST_MODEL, messages=QUESTION, max_tokens=16, temperature=0)
    whole = sdk.chat.complete(**kwargs)
    events = [e.data for e in sdk.chat.stream(**kwargs)]
    streamed = "".join(e.choices[0].delta.content or "" for e in events)
    assert streamed == whole.choices[0].message.content and streamed.strip()
    assert events[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_ollama_client_chat(server: Server) -> None:
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {server.key}"})
    options = {"num_predict": 16, "temperature": 0}
    whole = client.chat(model=TEST_MODEL, messages=QUESTION, options=options)
    parts = list(client.chat(model=TEST_MODEL, messages=QUESTION, options=options, stream=True))
    assert whole.message.role == "assistant" and whole.message.content.strip()
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize(("provider", "api_base"), [("openai", "/v1/"),
                                                    ("mistral", "/mistral/eu/v1/")])  # fmt: skip
def test_continue_chat_role(server: Server, provider: str, api_base: str) -> None:
    """Continue's chat and edit roles, through its own adapter, as docs/editors.md
    configures them."""
    assert (CONTINUE_DIR / "node_modules").exists(), "run npm ci in tests/continue (.ci/run does)"
    body = {"model": TEST_MODEL, "messages": QUESTION, "max_tokens": 16, "temperature": 0}
    # Continue's core asks the adapter for a stream (stream: true in the body it passes).
    arg = json.dumps({"provider": provider, "apiBase": server.url + api_base,
                      "apiKey": server.key, "body": {**body, "stream": True}})  # fmt: skip
    out = subprocess.run(["node", "chat_stream.mjs", arg], cwd=CONTINUE_DIR,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    with server.client() as http:
        expected = http.post("/v1/chat/completions", json=body).json()
    assert result["text"] == expected["choices"][0]["message"]["content"]
    assert result["finish"] in ("stop", "length")
