"""Property tests of the request model and body reading (no model, no server: the fast tier).

Whatever bytes arrive, ``parse_fim_request`` returns a valid request or raises a 422
``ApiError`` whose body serializes; it never raises anything else (which would be a 500)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fimgate.api.errors import ApiError, error_response
from fimgate.api.schemas import FimCompletionRequest
from fimgate.api.wires.mistral_fim import parse as parse_fim_request

pytestmark = pytest.mark.fast

FIELDS = [
    "model", "prompt", "suffix", "temperature", "top_p", "max_tokens", "min_tokens", "stream",
    "stop", "random_seed", "metadata", "prompt_cache_key", "max_completion_tokens",
    "frequency_penalty", "presence_penalty",
]  # fmt: skip
# Any text, lone surrogates included (what JSON's \\uXXXX escapes can carry).
TEXT = st.text(st.characters(codec=None, exclude_categories=()))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
BODIES = st.dictionaries(st.sampled_from(FIELDS) | TEXT, JSON_VALUES, max_size=8)


def _outcome(raw: bytes) -> FimCompletionRequest | ApiError:
    try:
        return parse_fim_request(raw)
    except ApiError as error:
        return error


def _check(raw: bytes) -> None:
    outcome = _outcome(raw)
    if isinstance(outcome, ApiError):
        assert outcome.status == 422
        error_response(outcome).body.decode()  # serializes, as UTF-8 text
        return
    # A valid request holds only text a tokenizer can encode.
    for value in (outcome.model, outcome.prompt, outcome.suffix or "", *outcome.stop_list):
        value.encode("utf-8")


@settings(max_examples=400)
@given(BODIES)
def test_any_json_object_is_a_request_or_a_422(body: dict) -> None:
    _check(json.dumps(body).encode())  # ensure_ascii: surrogates travel as \\u escapes


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_request_or_a_422(raw: bytes) -> None:
    _check(raw)


@given(prefix=TEXT, suffix=TEXT)
def test_text_fields_keep_their_text_and_mend_only_surrogates(prefix: str, suffix: str) -> None:
    raw = json.dumps({"model": "m", "prompt": prefix, "suffix": suffix}).encode()
    request = parse_fim_request(raw)
    for sent, got in ((prefix, request.prompt), (suffix, request.suffix)):
        assert len(got) <= len(sent)  # a surrogate pair joins into one character
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in sent):
            assert got == sent


def test_a_cut_emoji_becomes_the_replacement_character() -> None:
    request = parse_fim_request(b'{"model": "m", "prompt": "s = \\"\\ud83d", "suffix": "\\ude00"}')
    assert request.prompt == 's = "\ufffd' and request.suffix == "\ufffd"
    whole = parse_fim_request(b'{"model": "m", "prompt": "\\ud83d\\ude00"}')
    assert whole.prompt == "\N{GRINNING FACE}"
