"""Every editor's wire over the one request path (the fast tier: the real app, gateway and
engine above a stand-in model). Bodies are the editors' own, copied from their sources:
llama.vscode 3938fb3 (src/llama-server.ts createRequestPayload), llama.vim a1c8e6e
(autoload/llama.vim), Zed's open_ai_compatible_api (crates/edit_prediction/src/fim.rs),
tabby-agent (TabbyML/tabby 21b2904, clients/tabby-agent/src/codeCompletion/buildRequest.ts),
Continue's ollama provider (d0a3c0b, core/llm/llms/Ollama.ts). Each wire: an answer whole and
streamed, a refusal in its clients' shape (401 naming the setting, 429), a cancel, and one
ledger row with its route; and one job whichever wire it came on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engine_double import decode
from tests.fast_app import MODEL, FastApp, fast_app, sse_events

pytestmark = [pytest.mark.fast, pytest.mark.anyio]

PREFIX, SUFFIX = "def add(a, b):\n", "\n\nprint(add(1, 2))\n"
EXTRA = [{"text": "def sub(a, b):\n    return a - b\n", "time": 1733000000000,
          "filename": "/home/me/proj/ops.py"}]  # fmt: skip
# llama.vscode's completion request, its default settings (n_cmpl 3, its model default).
VSCODE = {
    "id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": EXTRA,
    "prompt": "    ", "n_predict": 128, "n_cmpl": 3, "top_k": 40, "top_p": 0.99,
    "stream": False, "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
    "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 500,
    "model": "google/gemini-2.5-flash",
}  # fmt: skip
# llama.vim's warm-up: the ring of chunks only, nothing to write.
VIM_WARM = {
    "id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": EXTRA, "prompt": "",
    "n_predict": 0, "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True,
    "t_max_prompt_ms": 1, "t_max_predict_ms": 1, "response_fields": [""], "model": "",
}  # fmt: skip
VIM_FIELDS = ["content", "timings/prompt_n", "timings/predicted_n", "truncated", "tokens_cached"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[FastApp]:
    async with fast_app(tmp_path, n_ctx=512) as app:
        yield app


def _prompt(fast: FastApp, run: int = -1) -> str:
    return decode(fast.transport.prompts[run])


# -- llama.cpp's /infill -----------------------------------------------------------------------


async def test_infill_answers_as_llama_cpp_for_llama_vscode(fast: FastApp) -> None:
    fast.transport.script.write = lambda _: "return a + b\nprint(1)\n"
    response = await fast.post(VSCODE, url="/infill")
    assert response.status_code == 200, response.text
    # llama.vim matches '"content":"' (no space) and reads one line.
    assert response.text.startswith("{") and '"content":"' in response.text
    assert "\n" not in response.text
    body = response.json()
    # n_indent 4: the line indented less ends the completion (its indentation kept).
    assert body["content"] == "return a + b\n" and body["stop"] is True
    assert body["generation_settings"]["n_predict"] == 128  # llama.vscode reads it unguarded
    timings = body["timings"]
    assert isinstance(timings["prompt_n"], int) and timings["predicted_n"] == 14  # to the cut
    # input_extra is laid out in the model's repository format, the prompt after the prefix.
    prompt = _prompt(fast)
    assert prompt.startswith("<|file_sep|>/home/me/proj/ops.py\ndef sub(a, b):")
    assert f"<|fim_prefix|>{PREFIX}    <|fim_suffix|>{SUFFIX}<|fim_middle|>" in prompt
    (row,) = fast.rows()
    assert row.route == "infill" and row.status == 200 and row.model == MODEL
    assert row.completion_tokens == 14


async def test_infill_response_fields_are_flat_keys_as_llama_vim_reads_them(
    fast: FastApp,
) -> None:
    body = {**VSCODE, "response_fields": VIM_FIELDS, "n_indent": 0}
    del body["n_cmpl"]
    answer = (await fast.post(body, url="/infill")).json()
    assert set(answer) == set(VIM_FIELDS)
    assert answer["timings/predicted_n"] == len(answer["content"]) == 13


async def test_infill_warm_ups_read_the_prompt_write_nothing_and_count_apart(
    fast: FastApp,
) -> None:
    response = await fast.post(VIM_WARM, url="/infill")
    assert response.status_code == 200 and response.json() == {}
    assert len(fast.transport.prompts) == 1  # the prompt went to the engine: it is cached
    assert "<|file_sep|>/home/me/proj/ops.py\n" in _prompt(fast)
    (row,) = fast.rows()
    assert row.route == "infill_warm" and row.completion_tokens == 0


async def test_infill_streams_as_llama_cpp_without_done(fast: FastApp) -> None:
    body = {**VSCODE, "stream": True, "n_indent": 0}
    response = await fast.post(body, url="/infill")
    events = [json.loads(line[6:]) for line in response.text.split("\n\n") if line]
    assert all(not e["stop"] for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == "return a + b\n"
    assert "[DONE]" not in response.text


async def test_infill_refusals_are_llama_cpp_errors_that_name_the_setting(fast: FastApp) -> None:
    # llama.vim sends "Authorization: Bearer " with its empty default key.
    response = await fast.client.post("/infill", json=VSCODE, headers={"Authorization": "Bearer"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == 401 and "llama-vscode.api_key" in error["message"]
    response = await fast.post({**VSCODE, "n_probs": 3}, url="/infill")
    assert response.status_code == 422 and "n_probs" in response.json()["error"]["message"]
    key = fast.workspace("tight", rpm=1)
    assert (await fast.post(VSCODE, key=key, url="/infill")).status_code == 200
    limited = await fast.post(VSCODE, key=key, url="/infill")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == 429
    assert "retry-after" in limited.headers


async def test_an_infill_client_that_leaves_cancels_it(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at = 0
    sent = await fast.disconnecting(VSCODE, gone=script.reached, url="/infill")
    assert sent[0]["status"] == 499
    (row,) = fast.rows()
    assert row.route == "infill" and row.cancelled
    assert fast.transport.stats()["cancelled"] == 1


# -- OpenAI's /v1/completions, and Zed's laid-out prompts --------------------------------------


async def test_openai_completions_with_suffix(fast: FastApp) -> None:
    body = {"model": MODEL, "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 64}
    answer = (await fast.post(body, url="/openai/eu/v1/completions")).json()
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"]
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["total_tokens"] == sum(
        answer["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_events([{"type": "http.response.body", "body": (await fast.post(
        stream, url="/v1/completions")).content}])  # fmt: skip
    assert events[-1] == {"done": True} and events[-2]["choices"] == []
    assert events[-2]["usage"]["completion_tokens"] == answer["usage"]["completion_tokens"]
    text = "".join(e["choices"][0]["text"] for e in events[:-2])
    assert text == answer["choices"][0]["text"]
    assert [r.route for r in fast.rows()] == ["completions", "completions"]


async def test_openai_completions_refuse_what_a_fim_server_cannot_do(fast: FastApp) -> None:
    for extra, field in (({"n": 2}, "n:"), ({"echo": True}, "echo"), ({"logprobs": 2}, "logp")):
        response = await fast.post({"model": MODEL, "prompt": "x", **extra}, url="/v1/completions")
        assert response.status_code == 422 and field in response.json()["message"], extra
    response = await fast.client.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert response.status_code == 401 and "ZED_OPEN_AI" in response.json()["message"]


async def test_zed_laid_out_prompts_are_one_job_with_the_fim_route(fast: FastApp) -> None:
    """Zed's qwen and codestral formats (fim.rs), the Mistral FIM route, /infill, OpenAI's
    suffix and Ollama's: the engine runs one prompt, markers as special tokens."""
    zed = {"model": MODEL, "max_tokens": 64, "stop": ["<|endoftext|>", "<|fim_prefix|>"]}
    bodies = [
        ("/v1/fim/completions", {"model": MODEL, "prompt": PREFIX, "suffix": SUFFIX}),
        ("/v1/completions", {**zed, "prompt": f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}"
                                              "<|fim_middle|>"}),
        ("/v1/completions", {**zed, "prompt": f"[SUFFIX]{SUFFIX}[PREFIX]{PREFIX}"}),
        ("/v1/completions", {"model": MODEL, "prompt": PREFIX, "suffix": SUFFIX}),
        ("/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX}),
        ("/api/generate", {"model": MODEL, "prompt": PREFIX, "suffix": SUFFIX}),
    ]  # fmt: skip
    texts = []
    for url, body in bodies:
        response = await fast.post(body, url=url)
        assert response.status_code == 200, (url, response.text)
        texts.append(_prompt(fast))
    assert texts == [texts[0]] * len(texts)
    assert texts[0].count("<|fim_prefix|>") == 1  # one marker: the real one
    fast.transport.prompts.clear()
    # Any other text stays text.
    await fast.post({"model": MODEL, "prompt": "a <|fim_suffix|> b"}, url="/v1/completions")
    assert _prompt(fast).startswith("<|fim_prefix|>a <|fim_suffix|> b<|fim_suffix|>")


# -- Tabby ---------------------------------------------------------------------------------------

TABBY = {
    "language": "python",
    "segments": {
        "prefix": PREFIX, "suffix": SUFFIX, "filepath": "proj/calc.py",
        "git_url": "https://github.com/me/proj.git",
        "declarations": [{"filepath": "proj/ops.py", "body": "def sub(a, b): ..."}],
        "relevant_snippets_from_recently_opened_files": [
            {"filepath": "proj/io.py", "body": "def show(x): ...", "score": 1}],
    },
}  # fmt: skip


async def test_tabby_completions_and_probes_as_tabby_agent_reads_them(fast: FastApp) -> None:
    answer = (await fast.post(TABBY, url="/v1/completions")).json()
    assert answer["id"].startswith("cmpl-") and answer["choices"][0]["index"] == 0
    assert answer["choices"][0]["text"] == "return a + b\n"
    prompt = _prompt(fast)
    assert prompt.startswith("<|repo_name|>proj\n<|file_sep|>proj/io.py\n")
    assert "<|file_sep|>proj/ops.py\ndef sub" in prompt and "<|file_sep|>proj/calc.py\n" in prompt
    for method in ("GET", "POST"):
        health = await fast.client.request(
            method, "/v1/health", headers={"Authorization": f"Bearer {fast.key}"}
        )
        assert health.json()["model"] == MODEL and health.json()["version"]["git_describe"]
    assert (await fast.client.get("/v1/health")).status_code == 401  # asks for the token
    assert (await fast.post({"type": "view"}, url="/v1/events")).status_code == 200
    (row,) = fast.rows()
    assert row.route == "tabby"


async def test_tabby_refusals(fast: FastApp) -> None:
    response = await fast.client.post("/v1/completions", json=TABBY)
    assert response.status_code == 401 and "tabby-client" in response.json()["message"]
    # A field Tabby's server does not know is ignored there, and here (new agents add some).
    newer = {**TABBY, "segments": {**TABBY["segments"], "colour": 1}}
    assert (await fast.post(newer, url="/v1/completions")).status_code == 200
    bad = {**TABBY, "segments": {"suffix": "x"}}
    response = await fast.post(bad, url="/v1/completions")
    assert response.status_code == 422 and "segments.prefix" in response.json()["message"]
    key = fast.workspace("tight", rpm=1)
    await fast.post(TABBY, key=key, url="/v1/completions")
    assert (await fast.post(TABBY, key=key, url="/v1/completions")).status_code == 429
    assert [r.route for r in fast.rows()] == ["tabby"] * 4


# -- Ollama ----------------------------------------------------------------------------------------

# Continue's ollama provider, FIM: stream left out (Ollama streams by default).
CONTINUE_OLLAMA = {
    "model": f"{MODEL}:latest", "prompt": PREFIX, "suffix": SUFFIX,
    "options": {"temperature": 0.01, "num_predict": 64, "stop": ["\n\n"], "num_ctx": 512},
    "keep_alive": 1800,
}  # fmt: skip


async def test_ollama_generate_streams_ndjson_by_default(fast: FastApp) -> None:
    response = await fast.post(CONTINUE_OLLAMA, url="/api/generate")
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    assert "".join(line["response"] for line in lines) == "return a + b\n"
    assert isinstance(lines[-1]["total_duration"], int) and lines[-1]["eval_count"] > 0
    whole = await fast.post({**CONTINUE_OLLAMA, "stream": False}, url="/api/generate")
    assert whole.json()["response"] == "return a + b\n" and whole.json()["done_reason"] == "stop"
    assert [r.route for r in fast.rows()] == ["ollama", "ollama"]


async def test_ollama_probes_as_continue_and_its_clients_make_them(fast: FastApp) -> None:
    auth = {"Authorization": f"Bearer {fast.key}"}
    tags = (await fast.client.get("/api/tags", headers=auth)).json()
    assert MODEL in [m["name"] for m in tags["models"]]
    for asked in ({"name": MODEL}, {"model": f"{MODEL}:latest"}):
        show = (await fast.post(asked, url="/api/show")).json()
        assert ".Suffix" in show["template"] and "model_info" in show  # Continue: FIM
        assert "num_ctx 512" in show["parameters"]
    missing = await fast.post({"model": "nope"}, url="/api/show")
    assert missing.status_code == 404 and missing.json() == {"error": "model 'nope' not found"}
    assert (await fast.client.get("/api/version")).json()["version"]


async def test_ollama_refusals_are_ollama_errors(fast: FastApp) -> None:
    response = await fast.client.post("/api/generate", json=CONTINUE_OLLAMA)
    assert response.status_code == 401 and "OLLAMA_API_KEY" in response.json()["error"]
    for option in ({"mirostat": 2}, {"colour": 1}):
        body = {**CONTINUE_OLLAMA, "options": option}
        response = await fast.post(body, url="/api/generate")
        assert response.status_code == 422 and list(response.json()) == ["error"], option
    assert (await fast.post({**CONTINUE_OLLAMA, "model": "x"}, url="/api/generate")).json() == {
        "error": f"model 'x' is not served here; available: {MODEL}, codestral-latest, "
        "codestral-2501, codestral-2405"
    }
    key = fast.workspace("tight", rpm=1)
    await fast.post(CONTINUE_OLLAMA, key=key, url="/api/generate")
    limited = await fast.post(CONTINUE_OLLAMA, key=key, url="/api/generate")
    assert limited.status_code == 429 and "error" in limited.json()


async def test_an_ollama_stream_left_midway_is_charged_for_what_it_got(fast: FastApp) -> None:
    script = fast.transport.script
    script.hold_at = 3
    sent = await fast.disconnecting(CONTINUE_OLLAMA, gone=script.reached, url="/api/generate")
    assert sent[0]["status"] == 200
    (row,) = fast.rows()
    assert row.route == "ollama" and row.cancelled and row.completion_tokens == 3


# -- every wire: the limit and a client that leaves ---------------------------------------------

WIRES = [
    ("/v1/fim/completions", {"model": MODEL, "prompt": PREFIX, "suffix": SUFFIX}, "fim"),
    ("/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX}, "infill"),
    ("/v1/completions", {"model": MODEL, "prompt": PREFIX, "suffix": SUFFIX}, "completions"),
    ("/v1/completions", TABBY, "tabby"),
    ("/api/generate", {**CONTINUE_OLLAMA, "stream": False}, "ollama"),
    ("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
     "chat"),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "stream": False}, "ollama_chat"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "body", "route"), WIRES)
async def test_each_wire_is_limited_and_cancelled_with_one_row_each(
    fast: FastApp, url: str, body: dict, route: str
) -> None:
    key = fast.workspace("tight", rpm=2)
    assert (await fast.post(body, key=key, url=url)).status_code == 200
    script = fast.transport.script
    script.hold_at = 0
    sent = await fast.disconnecting(body, gone=script.reached, key=key, url=url)
    assert sent[0]["status"] == 499
    script.hold_at = -1
    limited = await fast.post(body, key=key, url=url)
    assert limited.status_code == 429 and "retry-after" in limited.headers
    rows = fast.rows("tight")
    assert [(r.route, r.status, r.cancelled) for r in rows] == [
        (route, 200, False), (route, 499, True), (route, 429, False)
    ]  # fmt: skip
