"""The model's vocabulary in this process: llama.cpp's own tokenizer, called through ctypes.

xllamacpp has no tokenizer API, but its extension module exports llama.cpp's C API, so the
GGUF's vocabulary is loaded a second time, alone (``vocab_only``: no weights; under a second
and about 70 MB), and tokenized with directly. It answers as the engine's ``/tokenize`` does
(same code, same vocabulary) without an HTTP round trip per call; ctypes releases the GIL
while llama.cpp works. Tokenizing only reads the vocabulary (llama.cpp's are const methods,
each call with a state of its own), so calls from several threads at once are safe, and it
shares nothing with the engine's model.

``struct llama_model_params`` is passed by value, so its layout below must be the one built
into the pinned xllamacpp (2026.10.11549, llama.cpp with ``load_mode`` and ``lazy_mode``);
``_vocab_only_params`` refuses a build whose defaults do not sit where this layout expects them.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xllamacpp import xllamacpp as _extension

from fimgate.engines.base import EngineError

_INT32_MIN = -(2**31)  # llama_tokenize's answer to a text of more tokens than int32 holds


class _ModelParams(ctypes.Structure):
    _fields_ = [
        ("devices", ctypes.c_void_p),
        ("tensor_buft_overrides", ctypes.c_void_p),
        ("n_gpu_layers", ctypes.c_int32),
        ("split_mode", ctypes.c_int32),
        ("load_mode", ctypes.c_int32),
        ("lazy_mode", ctypes.c_int32),
        ("main_gpu", ctypes.c_int32),
        ("tensor_split", ctypes.c_void_p),
        ("progress_callback", ctypes.c_void_p),
        ("progress_callback_user_data", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("vocab_only", ctypes.c_bool),
        ("check_tensors", ctypes.c_bool),
        ("use_extra_bufts", ctypes.c_bool),
        ("no_host", ctypes.c_bool),
        ("no_alloc", ctypes.c_bool),
        ("load_mtp", ctypes.c_bool),
    ]


class _Returned(ctypes.Structure):
    # What llama_model_default_params writes, with room to spare: the callee writes its own
    # struct whole, so a build whose struct grew does not write past the buffer.
    _fields_ = [("raw", ctypes.c_ubyte * 256)]


@functools.cache
def _library() -> ctypes.CDLL:
    """The llama.cpp C API of the extension module xllamacpp already loaded."""
    lib = ctypes.CDLL(_extension.__file__)
    p, i32, char_p, bool_ = ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_bool
    signatures: dict[str, tuple[list[Any], Any]] = {
        "llama_backend_init": ([], None),
        "llama_model_default_params": ([], _Returned),
        "llama_model_load_from_file": ([char_p, _ModelParams], p),
        "llama_model_get_vocab": ([p], p),
        "llama_model_free": ([p], None),
        "llama_vocab_bos": ([p], i32),
        "llama_tokenize": ([p, char_p, i32, ctypes.POINTER(i32), i32, bool_, bool_], i32),
        "llama_token_to_piece": ([p, i32, char_p, i32, i32, bool_], i32),
    }
    for name, (args, result) in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    lib.llama_backend_init()  # the server's start calls it too; it only sets up timers
    return lib


def _vocab_only_params(lib: ctypes.CDLL) -> _ModelParams:
    """llama.cpp's defaults, vocabulary only. They must sit where this layout has them (GPU
    layers all, split by layer, auto load mode, extra buffer types on, every other flag
    off): a build whose struct moved would otherwise get its flags at the wrong offsets."""
    raw = bytes(lib.llama_model_default_params().raw)
    params = _ModelParams.from_buffer_copy(raw[: ctypes.sizeof(_ModelParams)])
    flags = raw[_ModelParams.vocab_only.offset :][:6]
    found = (params.n_gpu_layers, params.split_mode, params.load_mode, flags)
    if found != (-1, 1, -1, b"\x00\x00\x01\x00\x00\x00"):
        raise EngineError(f"xllamacpp's llama_model_params is not the layout expected: {found}")
    params.vocab_only = True
    return params


class LlamaVocab:
    """A GGUF's vocabulary, tokenizing as llama.cpp's ``/tokenize`` does."""

    def __init__(self, model_path: Path) -> None:
        self._lib = _library()
        params = _vocab_only_params(self._lib)
        self._model: int | None = self._lib.llama_model_load_from_file(
            str(model_path).encode(), params
        )
        if not self._model:
            raise EngineError(f"llama.cpp could not load the vocabulary of {model_path}")
        self._vocab: int = self._lib.llama_model_get_vocab(self._model)
        # Each token's bytes, once asked: a piece costs a ctypes call (2-6 µs), and the
        # typed text's pieces are asked again at every keystroke.
        self._known: dict[int, bytes] = {}
        # Calls under way (in threads): the last one out frees a closed vocabulary, so
        # closing at shutdown cannot pull it from under a tokenization.
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    def tokenize(self, text: str, pieces: bool = False) -> list[Any]:
        """Token ids (``pieces``: ``(id, piece)`` pairs) of user text, markers not parsed."""
        with self._use() as vocab:
            ids = self._ids(vocab, text.encode(), parse_special=False)
            return [(i, self._piece(vocab, i)) for i in ids] if pieces else ids

    def special_token(self, marker: str) -> int | None:
        """The id of ``marker`` when the vocabulary has it as one token."""
        with self._use() as vocab:
            ids = self._ids(vocab, marker.encode(), parse_special=True)
        return ids[0] if len(ids) == 1 else None

    def bos_token(self) -> str | None:
        """The BOS token's text, as the server's ``/props`` gives it (None: there is none)."""
        with self._use() as vocab:
            bos = self._lib.llama_vocab_bos(vocab)
            if bos < 0:  # LLAMA_TOKEN_NULL
                return None
            return self._bytes(vocab, bos).decode(errors="replace") or None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._free_unused()

    @contextlib.contextmanager
    def _use(self) -> Iterator[int]:
        with self._lock:
            if self._closed:
                raise EngineError("the vocabulary is closed")
            self._users += 1
        try:
            yield self._vocab
        finally:
            with self._lock:
                self._users -= 1
                self._free_unused()

    def _free_unused(self) -> None:  # under the lock
        if self._closed and not self._users and self._model:
            self._lib.llama_model_free(self._model)
            self._model = None

    def _ids(self, vocab: int, data: bytes, parse_special: bool) -> list[int]:
        # A token holds at least one byte, so this many always suffice; a count that falls
        # short would come back negated (how many were needed), and be asked again.
        size = len(data)
        while size:
            ids = (ctypes.c_int32 * size)()
            n = self._lib.llama_tokenize(vocab, data, len(data), ids, size, False, parse_special)
            if n >= 0:
                return ids[:n]
            if n == _INT32_MIN:
                raise EngineError("text too long to tokenize")
            size = -n
        return []

    def _piece(self, vocab: int, token: int) -> str | list[int]:
        """A token's text, or its bytes where they are not whole UTF-8 (a character split
        between tokens), as ``/tokenize`` with ``with_pieces`` gives it."""
        data = self._known.get(token)
        if data is None:
            data = self._known[token] = self._bytes(vocab, token)
        try:
            return data.decode()
        except UnicodeDecodeError:
            return list(data)

    def _bytes(self, vocab: int, token: int) -> bytes:
        # Control tokens included (``special``), as the server writes pieces and /props.
        size = 32
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(vocab, token, buf, size, 0, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n
