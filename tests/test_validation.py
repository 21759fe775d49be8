"""Every bad request gets the right status and a message that names the problem."""

from __future__ import annotations

import httpx
import pytest

URL = "/mistral/eu/v1/fim/completions"
OK = {"model": "codestral-latest", "prompt": "def f(x):\n    return", "max_tokens": 2}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["object"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": 1.6}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": -1}, "top_p"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"random_seed": -5}, "random_seed"),
        ({"stop": 5}, "stop"),
        ({"stop": ["ok", 3]}, "stop"),
        ({"stream": "maybe"}, "stream"),
        ({"suffix": 12}, "suffix"),
        ({"frequency_penalty": 3}, "frequency_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"best_of": 2}, "best_of"),
    ],
)
def test_bad_field_is_422_naming_it(http: httpx.Client, change: dict, field: str) -> None:
    body = _error(http.post(URL, json={**OK, **change}), 422)
    assert field in body["message"]
    assert any(field in map(str, d["loc"]) for d in body["detail"])


@pytest.mark.parametrize("missing", ["prompt", "model"])
def test_missing_required_field(http: httpx.Client, missing: str) -> None:
    body = {k: v for k, v in OK.items() if k != missing}
    err = _error(http.post(URL, json=body), 422)
    assert missing in err["message"]


def test_unknown_field_message_says_unknown(http: httpx.Client) -> None:
    err = _error(http.post(URL, json={**OK, "n": 3}), 422)
    assert "unknown field 'n'" in err["message"]


def test_min_tokens_over_max_tokens(http: httpx.Client) -> None:
    err = _error(http.post(URL, json={**OK, "min_tokens": 5, "max_tokens": 2}), 422)
    assert "min_tokens" in err["message"]


def test_conflicting_token_limits(http: httpx.Client) -> None:
    err = _error(http.post(URL, json={**OK, "max_completion_tokens": 7}), 422)
    assert "max_completion_tokens" in err["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b""])
def test_malformed_body(http: httpx.Client, raw: bytes) -> None:
    response = http.post(URL, content=raw, headers={"content-type": "application/json"})
    _error(response, 422)


def test_unknown_region_is_404(http: httpx.Client) -> None:
    err = _error(http.post("/mistral/us/v1/fim/completions", json=OK), 404)
    assert "'us'" in err["message"] and "eu" in err["message"]
    _error(http.get("/mistral/us/v1/models"), 404)


def test_unknown_model_is_404_listing_models(http: httpx.Client) -> None:
    err = _error(http.post(URL, json={**OK, "model": "gpt-4"}), 404)
    assert "'gpt-4'" in err["message"]
    assert "codestral-latest" in err["message"] and "qwen2.5-coder-0.5b" in err["message"]
    assert err["code"] == "model_not_found"


def test_unknown_path_uses_envelope(http: httpx.Client) -> None:
    _error(http.post("/mistral/eu/v1/chat/nothing", json=OK), 404)
    _error(http.get(URL), 405)


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 1.5, "top_p": 0.5, "random_seed": 2**40},
        {"metadata": {"editor": "vim"}, "prompt_cache_key": "user-1"},
        {"max_completion_tokens": 2, "frequency_penalty": 0.5, "presence_penalty": -0.5},
        {"stop": ["\n"], "min_tokens": 0, "suffix": None, "temperature": None},
    ],
)
def test_fields_known_clients_send_are_accepted(http: httpx.Client, extra: dict) -> None:
    response = http.post(URL, json={**OK, **extra})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize(
    "path",
    [
        "/v1/fim/completions",
        "/api/public/mistral/eu/v1/fim/completions",
        "/api/public/v1/fim/completions",
        "/mistral/eu/fim/completions",  # Continue with an apiBase lacking its trailing slash
    ],
)
def test_every_documented_path_serves(http: httpx.Client, path: str) -> None:
    response = http.post(path, json=OK)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_max_tokens_zero_generates_nothing(http: httpx.Client) -> None:
    body = http.post(URL, json={**OK, "max_tokens": 0}).json()
    assert body["choices"][0]["message"]["content"] == ""
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 0
