"""``fimgate engine-server``: llama.cpp's own server for one model, from the PyPI packages
alone, for a gateway to front (``fimgate serve --upstream http://HOST:PORT``). It reads the
same settings as ``serve`` (``FIMGATE_*``, then its flags): the model, the data folder, and
how llama.cpp runs."""

from __future__ import annotations

import os
import signal
import threading

import click

from fimgate import modelpack
from fimgate.cli_settings import settings_options
from fimgate.settings import Settings

FLAGS = (
    "models", "data_dir", "engine_host", "engine_port", "engine_api_key_env",
    "n_ctx", "n_parallel", "threads", "n_batch", "cache_ram_mib",
)  # fmt: skip


@click.command("engine-server")
@settings_options(*FLAGS)
def engine_server(settings: Settings) -> None:
    """Run llama.cpp's server (/completion, /tokenize, /v1/completions, /health) for the first
    --model on HOST:PORT."""
    import xllamacpp

    from fimgate.engines.transports.inprocess import llama_params

    engine = settings.engine
    try:
        path = modelpack.locate(engine.models[0], settings.store.data_dir)
    except modelpack.ModelPackError as exc:
        raise click.ClickException(str(exc)) from None
    params = llama_params(path, engine)
    params.hostnames = [engine.engine_host]
    params.port = engine.engine_port
    if name := engine.engine_api_key_env:
        if not os.environ.get(name):
            raise click.ClickException(f"{name} is not set")
        params.api_keys = [os.environ[name]]
    server = xllamacpp.Server(params)  # serves from its own threads until the process ends
    click.echo(f"engine-server: {path.name} on {server.listening_address}", err=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
