"""``fimgate engine-server``: llama.cpp's own server for one model, from the PyPI packages
alone, for a gateway to front (``fimgate serve --upstream http://HOST:PORT``)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click
from pydantic import ValidationError

from fimgate import modelpack
from fimgate.engines.settings import EngineSettings


@click.command("engine-server")
@click.option("--model", default=modelpack.DEFAULT_MODEL, help="Packaged model name or GGUF.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--n-ctx", type=int, help="Context per sequence (default 8192).")
@click.option("--parallel", "n_parallel", type=int, help="Parallel sequences (default 4).")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option(
    "--api-key-env", help="Name of an environment variable holding the key clients must send."
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where packaged models lie.")
def engine_server(
    model: str,
    host: str,
    port: int,
    n_ctx: int | None,
    n_parallel: int | None,
    threads: int | None,
    api_key_env: str | None,
    data_dir: Path | None,
) -> None:
    """Run llama.cpp's server (/completion, /tokenize, /v1/completions, /health) on HOST:PORT."""
    import platformdirs
    import xllamacpp

    from fimgate.engines.transports.inprocess import llama_params

    given = {"n_ctx": n_ctx, "n_parallel": n_parallel, "threads": threads}
    try:
        settings = EngineSettings(**{k: v for k, v in given.items() if v is not None})
        path = modelpack.locate(model, data_dir or platformdirs.user_data_path("fimgate"))
    except (ValidationError, modelpack.ModelPackError) as exc:
        raise click.ClickException(str(exc)) from None
    params = llama_params(path, settings)
    params.hostnames = [host]
    params.port = port
    if api_key_env:
        if not os.environ.get(api_key_env):
            raise click.ClickException(f"{api_key_env} is not set")
        params.api_keys = [os.environ[api_key_env]]
    server = xllamacpp.Server(params)  # serves from its own threads until the process ends
    click.echo(f"engine-server: {path.name} on {server.listening_address}", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
