"""Management commands: ``fimgate workspaces | keys | limits | usage``.

They work on the same database as ``serve`` (``--data-dir`` / ``--database-url`` or the
FIMGATE_* environment), while it runs; changes apply to the server's next request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fimgate.cli_settings import settings_options
from fimgate.gateway.keys import AdminError, KeyInfo, KeyStore
from fimgate.gateway.limits import LimitBook, Limits
from fimgate.gateway.usage import Acceptance, UsageLedger
from fimgate.settings import Settings
from fimgate.store.database import Database, open_database

out = Console()


def _database_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --data-dir/--database-url (the settings tree's), and hands the command an open
    Database instead."""

    @settings_options("data_dir", "database_url")
    @wraps(command)
    def run(settings: Settings, **kwargs: Any) -> Any:
        database = open_database(settings.store.database)
        try:
            return command(database=database, settings=settings, **kwargs)
        except AdminError as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            database.close()

    return run


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


# -- workspaces --------------------------------------------------------------------------------


@click.group()
def workspaces() -> None:
    """Workspaces: keys and rate limits belong to one."""


@workspaces.command("create")
@click.argument("name")
@_database_options
def workspaces_create(name: str, database: Database, **_: Any) -> None:
    """Create workspace NAME."""
    KeyStore(database).create_workspace(name)
    click.echo(f"created workspace {name!r}; make a key with: fimgate keys create -w {name}")


@workspaces.command("list")
@_database_options
def workspaces_list(database: Database, **_: Any) -> None:
    """List workspaces, their active keys and what the server remembers of their editors."""
    table = Table("workspace", "created (UTC)", "active keys", "memory")
    for name, created, count, memory in KeyStore(database).list_workspaces():
        table.add_row(name, _when(created), str(count), memory)
    out.print(table)


@workspaces.command("memory")
@click.argument("name")
@click.argument("memory", required=False, type=click.Choice(["off", "key", "workspace"]))
@_database_options
def workspaces_memory(name: str, memory: str | None, database: Database, **_: Any) -> None:
    """Show or set what the server remembers of workspace NAME's editors' files (in memory
    only; docs/engine.md): off; key (each key reads its own, the default); workspace (its
    keys read each other's)."""
    store = KeyStore(database)
    if memory is not None:
        store.set_memory(name, memory)
    click.echo(f"workspace {name!r}: memory {store.memory_of(name)}")


# -- keys --------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """API keys: shown once at creation, stored only as a hash."""


@keys.command("create")
@click.option("--workspace", "-w", required=True, help="The workspace the key belongs to.")
@click.option("--name", "-n", help="A label, e.g. who or what uses the key.")
@_database_options
def keys_create(workspace: str, name: str | None, database: Database, **_: Any) -> None:
    """Create a key and print it (the only time it is ever shown)."""
    info, key = KeyStore(database).create_key(workspace, name)
    click.echo(key)  # stdout: the key alone, so `KEY=$(fimgate keys create ...)` works
    click.echo(
        f"key {info.id} for workspace {workspace!r}: store it now, it cannot be shown again",
        err=True,
    )


def _key_row(table: Table, key: KeyInfo) -> None:
    table.add_row(
        key.id,
        key.hint,
        key.workspace,
        key.name or "",
        _when(key.created_at),
        _when(key.revoked_at) or "active",
    )


@keys.command("list")
@click.option("--workspace", "-w", help="Only this workspace's keys.")
@_database_options
def keys_list(workspace: str | None, database: Database, **_: Any) -> None:
    """List keys (ids and hints, never the keys)."""
    table = Table("id", "key", "workspace", "name", "created (UTC)", "revoked (UTC)")
    for key in KeyStore(database).list_keys(workspace):
        _key_row(table, key)
    out.print(table)


@keys.command("revoke")
@click.argument("id_or_key")
@_database_options
def keys_revoke(id_or_key: str, database: Database, **_: Any) -> None:
    """Revoke a key by its id or the key itself; the next request with it gets a 401."""
    info = KeyStore(database).revoke(id_or_key)
    click.echo(f"revoked key {info.id} of workspace {info.workspace!r}")


# -- limits ------------------------------------------------------------------------------------


@click.group()
def limits() -> None:
    """Requests and tokens per minute, per workspace and model."""


@limits.command("set")
@click.option("--workspace", "-w", required=True)
@click.option("--model", "-m", help="Model name or alias (default: every model).")
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--tpm", type=int, help="Tokens (prompt + completion) per minute.")
@_database_options
def limits_set(
    workspace: str,
    model: str | None,
    rpm: int | None,
    tpm: int | None,
    database: Database,
    settings: Settings,
) -> None:
    """Override a workspace's limits (for one model, or all); applies to the next request."""
    if rpm is None and tpm is None:
        raise click.UsageError("give --rpm, --tpm or both")
    book = LimitBook(database, Limits(settings.gateway.default_rpm, settings.gateway.default_tpm))
    book.set(workspace, model, rpm, tpm)
    click.echo(f"limits set for workspace {workspace!r} on {model or 'every model'}")


@limits.command("show")
@click.option("--workspace", "-w")
@_database_options
def limits_show(workspace: str | None, database: Database, settings: Settings) -> None:
    """Show the defaults and every override."""
    table = Table("workspace", "model", "rpm", "tpm")
    table.add_row(
        "(default)", "*", str(settings.gateway.default_rpm), str(settings.gateway.default_tpm)
    )
    book = LimitBook(database, Limits(settings.gateway.default_rpm, settings.gateway.default_tpm))
    for ws, model, rpm, tpm in book.overrides(workspace):
        table.add_row(ws, model, str(rpm or "(default)"), str(tpm or "(default)"))
    out.print(table)


# -- usage -------------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> datetime:
    """'15m', '2h', '7d', or an ISO date/time (UTC unless it says otherwise)."""
    match = _RELATIVE.match(text.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use e.g. 30m, 2h, 7d or 2026-11-22T10:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.command()
@click.option("--workspace", "-w")
@click.option("--since", help="30m, 2h, 7d, or an ISO time (UTC).")
@click.option("--limit", type=int, help="Only the newest N rows.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows.")
@click.option(
    "--acceptance", is_flag=True,
    help="Only the inferred acceptance per workspace, key and model (with --json: as JSON).",
)  # fmt: skip
@_database_options
def usage(
    workspace: str | None,
    since: str | None,
    limit: int | None,
    as_json: bool,
    acceptance: bool,
    database: Database,
    **_: Any,
) -> None:
    """The usage ledger: one row per FIM request, then the completions' inferred acceptance
    (a completion counts as accepted when the key's next prompt holds its text, in full or in
    part)."""
    ledger = UsageLedger(database)
    start = parse_since(since) if since else None
    if acceptance:
        accepted = ledger.acceptance(workspace, start)
        if as_json:
            click.echo(json.dumps([a.to_json() for a in accepted], indent=1))
        else:
            out.print(_acceptance_table(accepted))
        return
    rows = ledger.rows(workspace, start, limit)
    if as_json:
        click.echo(json.dumps([row.to_json() for row in rows], indent=1))
        return
    table = Table(title="usage (times in UTC; tokens charged)")
    for header in ("time", "workspace", "key", "model", "prompt", "compl.", "status", "ms"):
        table.add_column(header, no_wrap=header in ("time", "key"))
    table.add_column("cancelled")
    for r in rows:
        table.add_row(
            r.created_at.strftime("%m-%d %H:%M:%S"),
            r.workspace,
            r.key_id,
            r.model or "",
            str(r.prompt_tokens),
            str(r.completion_tokens),
            str(r.status),
            f"{r.latency_ms:.0f}",
            "yes" if r.cancelled else "",
        )
    out.print(table)
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    out.print(f"{len(rows)} requests, {tokens} tokens")
    if accepted := ledger.acceptance(workspace, start):
        out.print(_acceptance_table(accepted))


def _acceptance_table(accepted: list[Acceptance]) -> Table:
    table = Table(title="completions accepted (inferred from each key's next prompt)")
    for header in ("workspace", "key", "model", "judged", "accepted", "rate", "chars accepted"):
        table.add_column(header)
    for a in accepted:
        table.add_row(
            a.workspace, a.key_id, a.model or "", str(a.judged), str(a.accepted),
            f"{a.rate:.1%}", f"{a.accepted_chars} of {a.shown_chars}",
        )  # fmt: skip
    return table


COMMANDS = (workspaces, keys, limits, usage)
