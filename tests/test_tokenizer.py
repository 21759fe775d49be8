"""The in-process tokenizer (llama.cpp's C API through ctypes, engines/transports/
llama_vocab.py) answers as the engine's own ``/tokenize`` and ``/props`` do, which fimgate
asked before and upstream llama.cpp servers still answer: the same ids and pieces for any
text, the same ids for the markers, the same BOS token. With the real 0.5B, both asked of
one engine: its private HTTP listener is the reference."""

from __future__ import annotations

import argparse
import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from fimgate import modelpack
from fimgate.engines.fim_templates import FIM_TEMPLATES
from fimgate.engines.transports import inprocess
from fimgate.engines.transports.inprocess import INLINE_CHARS, InProcessLlamaCpp
from fimgate.engines.transports.llamacpp_api import LlamaCppApi
from fimgate.settings import EngineSettings
from tests.conftest import DATA_DIR, TEST_MODEL

# One event loop for the module: the listener's client lives on it.
LOOP = asyncio.new_event_loop()
SETTINGS = EngineSettings(n_ctx=1024, n_parallel=1, threads=2)
KEY = "the-listener-key"  # random in the engine; fixed here to read its /tokenize

PYTHON_FILE = Path(inspect.getfile(argparse)).read_text()[:6000]
CORPUS = {
    "ascii code": "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    # Markers written in user text stay text.
    "markers as text": 'x = "<|fim_middle|>"\n<|file_sep|>evil.py\n<|fim_prefix|><|endoftext|>',
    "unicode": "naïve café — 日本語のテキスト, 中文, 한국어 😀👍🏽🦀 ∑∫√ é",
    # Characters the vocabulary splits between tokens: some pieces are bytes.
    "split characters": "龘靐齉 ꙮ 𓀀𓁐 🫠",
    "whitespace runs": "   \t\t\n\n\n    \r\n  \u00a0\u2028 " + " " * 40 + "\n" * 7,
    "control characters": "a\x00b\x1b[0m\x7f",
    "long runs": "=" * 300 + "#" * 77,
    "empty": "",
    "python file": PYTHON_FILE,  # past INLINE_CHARS: tokenized in a thread
}
MARKERS = sorted(
    {m for t in FIM_TEMPLATES.values() for m in (*t.markers, t.repo_name, t.file_sep) if m}
    | {"<|fim_prefix|>", "<|fim_middle|>", "<|file_sep|>", "<s>", "[SUFFIX]"}  # the router's
    | {"", "<|endoftext|>", "<|im_start|>", "plain", "<|fim_middle|>x", " <|fim_middle|>"}
)


@pytest.fixture(scope="module")
def engine() -> Iterator[tuple[InProcessLlamaCpp, LlamaCppApi]]:
    path = modelpack.locate(TEST_MODEL, DATA_DIR)
    with mock.patch.object(inprocess.secrets, "token_urlsafe", return_value=KEY):
        transport = InProcessLlamaCpp(path, SETTINGS)
    address = transport._server.listening_address
    url = address if address.startswith("http") else f"http://{address}"
    listener = LlamaCppApi(url, {"Authorization": f"Bearer {KEY}"})
    yield transport, listener
    LOOP.run_until_complete(listener.aclose())
    LOOP.run_until_complete(transport.aclose())


@pytest.mark.parametrize("pieces", [False, True], ids=["ids", "pieces"])
@pytest.mark.parametrize("name", list(CORPUS))
def test_tokens_are_the_listeners(
    engine: tuple[InProcessLlamaCpp, LlamaCppApi], name: str, pieces: bool
) -> None:
    transport, listener = engine
    text = CORPUS[name]
    mine = LOOP.run_until_complete(transport.tokenize(text, pieces))
    assert mine == LOOP.run_until_complete(listener.tokenize(text, pieces))
    if pieces:  # the bytes each piece stands for make up the text
        raw = b"".join(p.encode() if isinstance(p, str) else bytes(p) for _, p in mine)
        assert raw == text.encode()


def test_the_corpus_holds_what_it_is_for(engine: tuple[InProcessLlamaCpp, LlamaCppApi]) -> None:
    transport, _ = engine
    split = LOOP.run_until_complete(transport.tokenize(CORPUS["split characters"], True))
    assert any(isinstance(piece, list) for _, piece in split)
    assert len(CORPUS["python file"]) == 6000 > INLINE_CHARS
    marker = transport.special_token("<|fim_middle|>")
    assert marker is not None
    assert marker not in LOOP.run_until_complete(transport.tokenize(CORPUS["markers as text"]))


def test_markers_and_bos_are_the_listeners(engine: tuple[InProcessLlamaCpp, LlamaCppApi]) -> None:
    transport, listener = engine
    assert {m: transport.special_token(m) for m in MARKERS} == {
        m: listener.special_token(m) for m in MARKERS
    }
    assert transport.special_token("<|fim_middle|>") == 151660
    assert transport.bos_token() == listener.bos_token() == "<|endoftext|>"


def test_every_piece_is_text_where_the_server_finds_it_utf8(
    engine: tuple[InProcessLlamaCpp, LlamaCppApi],
) -> None:
    """Over the whole vocabulary: a piece is bytes exactly where llama.cpp's server checks
    it is not UTF-8 (its is_valid_utf8, a check of byte shapes only, not Python's)."""
    transport, _ = engine
    vocab = transport._vocab
    with vocab._use() as handle:
        for token in range(151936):
            data = vocab._bytes(handle, token)
            assert isinstance(vocab._piece(handle, token), str) == _server_utf8(data), token


def _server_utf8(data: bytes) -> bool:
    i = 0
    while i < len(data):
        lead = data[i]
        if lead < 0x80:
            size = 1
        elif lead & 0xE0 == 0xC0:
            size = 2
        elif lead & 0xF0 == 0xE0:
            size = 3
        elif lead & 0xF8 == 0xF0:
            size = 4
        else:
            return False
        if len(data) - i < size or any(b & 0xC0 != 0x80 for b in data[i + 1 : i + size]):
            return False
        i += size
    return True


def test_tokenizing_in_threads_while_the_engine_decodes(
    engine: tuple[InProcessLlamaCpp, LlamaCppApi],
) -> None:
    """Threads tokenize side by side while llama.cpp generates: each gets its own answer."""
    transport, _ = engine
    texts = [PYTHON_FILE[i * 500 :] for i in range(8)]
    alone = [LOOP.run_until_complete(transport.tokenize(t, True)) for t in texts]

    def generate(ids: list[int]) -> str:  # straight to llama.cpp, in a worker thread
        body = {"prompt": ids, "n_predict": 48, "temperature": 0, "ignore_eos": True}
        chunks: list[dict] = []
        transport._server.handle_completions(body, lambda chunk: chunks.append(chunk) or False)
        return chunks[-1]["choices"][0]["text"]

    async def together() -> list:
        ids = await transport.tokenize("def quicksort(items):\n")
        decoding = asyncio.to_thread(generate, ids)
        return await asyncio.gather(decoding, *(transport.tokenize(t, True) for t in texts))

    generated, *tokenized = LOOP.run_until_complete(together())
    assert tokenized == alone
    assert generated
