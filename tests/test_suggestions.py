"""Typing along a suggestion (engines/suggestions.py), through the HTTP API with the real 0.5B:
the rest comes at once from what the model already said, generation goes on from its end
without reading the prompt again, and nothing crosses to another key or another prompt."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.conftest import Server
from tests.test_generation import URL, _wait_idle

SUFFIX = "\n\nprint(fibonacci(10))\n"


# Past 256 characters the typed text goes at the middle's start and its last token is taken
# back (typed_middle.py): the suggestion then starts with text the client already has.
LONG = "".join(f'"""Module {i} of the maths helpers, with a fibonacci."""\n' for i in range(8))


def _prefix(long: bool = False) -> str:
    # A prefix of its own, so no other test's suggestion matches it.
    return f"# {uuid.uuid4().hex}\n{LONG if long else ''}def fibonacci(n):\n    if n"


def _complete(http: httpx.Client, prompt: str, **body) -> dict:
    body = {"model": "codestral-latest", "prompt": prompt, "suffix": SUFFIX, "temperature": 0,
            **body}  # fmt: skip
    response = http.post(URL, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _text(result: dict) -> str:
    return result["choices"][0]["message"]["content"]


@pytest.mark.parametrize("long", [False, True], ids=["short", "typed-middle"])
def test_typing_along_a_finished_suggestion_gets_its_rest_without_the_model(
    server: Server, http: httpx.Client, long: bool
) -> None:
    prefix = _prefix(long)
    first = _complete(http, prefix, max_tokens=200)
    suggestion = _text(first)
    assert first["choices"][0]["finish_reason"] == "stop" and len(suggestion) > 6
    before = _wait_idle(server)
    typed = suggestion[:5]
    second = _complete(http, prefix + typed, max_tokens=200)
    after = _wait_idle(server)
    assert _text(second) == suggestion[5:]
    assert second["choices"][0]["finish_reason"] == "stop"
    assert after["went_on"] == before["went_on"] + 1
    assert after["prompt_tokens_computed"] == before["prompt_tokens_computed"]  # no model call
    # Usage is the request's own: its prompt, and the tokens of what it got.
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    assert 0 < second["usage"]["completion_tokens"] < first["usage"]["completion_tokens"]


@pytest.mark.parametrize("long", [False, True], ids=["short", "typed-middle"])
def test_a_suggestion_cut_short_goes_on_from_its_end_reading_almost_nothing(
    server: Server, http: httpx.Client, long: bool
) -> None:
    other = _prefix(long)
    cut = _text(_complete(http, other, max_tokens=6))
    before = _wait_idle(server)
    typed = cut[:3]
    went = _complete(http, other + typed, max_tokens=40 - 3)
    after = _wait_idle(server)
    assert after["went_on"] == before["went_on"] + 1
    assert _text(went).startswith(cut[3:])
    assert len(_text(went)) > len(cut) - 3  # generated on past the cut
    # The prompt and the suggestion were in the cache: a few tokens read, not the suffix.
    assert after["prompt_tokens_computed"] - before["prompt_tokens_computed"] < 8


def test_typing_something_else_or_another_key_gets_a_fresh_completion(
    server: Server, http: httpx.Client
) -> None:
    prefix = _prefix()
    suggestion = _text(_complete(http, prefix, max_tokens=30))
    before = _wait_idle(server)
    _complete(http, prefix + "z = 1\n    ", max_tokens=4)  # not what was suggested
    other_key = server.cli("keys", "create", "-w", "default").strip()
    with server.client(other_key) as other:
        _complete(other, prefix + suggestion[:3], max_tokens=4)  # another editor
    _complete(http, prefix + suggestion[:3], max_tokens=4, temperature=0.5)  # not greedy
    _complete(http, prefix + suggestion[:3], max_tokens=4, stop=["\n\n"])  # other stops
    assert _wait_idle(server)["went_on"] == before["went_on"]
