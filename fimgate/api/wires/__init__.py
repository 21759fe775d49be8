"""Wires: one module per client format. A wire reads its client's request into a job for the
serving step (api/serving.py) and writes the answer back in the client's format; it knows
nothing else.

``refusal_for`` gives the middleware, for a path, the error shape its clients parse and
where their users put a key, so a 401 tells an editor's user which setting to fill."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse

from fimgate.api.errors import ApiError, error_response
from fimgate.api.wires import infill, ollama

ErrorWriter = Callable[[ApiError, dict[str, str] | None], JSONResponse]

_TABBY = "Tabby's extensions: 'token' under [server] in ~/.tabby-client/agent/config.toml"
_KEY_HINTS: tuple[tuple[Callable[[str], bool], ErrorWriter, str], ...] = (
    (lambda path: path == "/infill", infill.error,
     "llama.vscode: the setting 'llama-vscode.api_key'; llama.vim: g:llama_config.api_key"),
    (lambda path: path.startswith("/api/"), ollama.error,
     "Continue's ollama provider: 'apiKey'; the ollama Python client: "
     "Client(headers={'Authorization': 'Bearer <key>'}) or OLLAMA_API_KEY"),
    (lambda path: path.startswith(("/v1/health", "/v1/events", "/v1beta/")), error_response,
     _TABBY),
    (lambda path: path.endswith("/v1/completions"), error_response,
     f"{_TABBY}; Zed: ZED_OPEN_AI_COMPATIBLE_EDIT_PREDICTION_API_KEY; OpenAI clients: api_key"),
)  # fmt: skip


def refusal_for(path: str) -> tuple[ErrorWriter, str]:
    """The error writer for the clients of ``path`` (without its deployment prefix), and
    where their users set a key ("" on Mistral's paths, whose clients call it the API key)."""
    for matches, writer, hint in _KEY_HINTS:
        if matches(path):
            return writer, hint
    return error_response, ""
