"""Commands other packages add through the entry-point group ``fimgate.commands`` (``eval``:
fimgate_eval, the ``eval`` extra), imported only when run or listed."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import click


class _EntryPointCommand(click.Command):
    """A command another package adds through the entry-point group ``fimgate.commands``
    (``eval``: fimgate_eval, the ``eval`` extra). Imported only when it is run or listed
    (``fimgate eval``, ``fimgate --help``), so that the runtime imports none of it. When its
    import fails (the extra is not installed) the command says what to install instead."""

    def __init__(self, entry_point: metadata.EntryPoint) -> None:
        super().__init__(entry_point.name)
        self.entry_point = entry_point
        self._loaded: click.Command | None = None

    def load(self) -> click.Command:
        if self._loaded is None:
            try:
                self._loaded = self.entry_point.load()
            except ImportError as exc:
                self._loaded = _not_installed(self.entry_point, exc)
        return self._loaded

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> click.Context:
        return self.load().make_context(info_name, args, parent=parent, **extra)

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.load().get_short_help_str(limit)


def _not_installed(entry_point: metadata.EntryPoint, exc: ImportError) -> click.Command:
    dist = entry_point.dist.name if entry_point.dist else "fimgate"
    hint = f"pip install '{dist}[{entry_point.name}]'"

    def refuse(args: tuple[str, ...]) -> None:
        raise click.ClickException(f"`fimgate {entry_point.name}` is not available ({exc}): {hint}")

    return click.Command(
        entry_point.name, callback=refuse, add_help_option=False,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True}, short_help=f"Not installed: {hint}",
    )  # fmt: skip


def add_plugins(group: click.Group) -> None:
    """Every command of the entry-point group that ``group`` does not have already."""
    for entry_point in metadata.entry_points(group="fimgate.commands"):
        if entry_point.name not in group.commands:
            group.add_command(_EntryPointCommand(entry_point))
