"""Command-line flags made from the settings tree (``settings.py``): a command names the
settings it takes, and gets one flag each, whose help says the default the code uses and
the environment variable that sets it too. A flag given wins over the environment."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from fimgate.settings import ENV_PREFIX, SECTIONS, Settings, default_text, fields, flag_of

Command = Callable[..., Any]


def _plain(annotation: Any) -> Any:
    """``X`` of ``X | None``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _option(name: str, info: FieldInfo, flag: str) -> Callable[[Command], Command]:
    kind = _plain(info.annotation)
    help_text = f"{info.description} [default: {default_text(info)}; {ENV_PREFIX}{name.upper()}]"
    common: dict[str, Any] = {"help": help_text, "default": None}
    if kind is bool:
        return click.option(flag, name, **common)  # flag_of made it --x/--no-x
    if typing.get_origin(kind) is list:
        return click.option(flag, name, multiple=True, **common)
    if typing.get_origin(kind) is Literal:
        return click.option(flag, name, type=click.Choice(typing.get_args(kind)), **common)
    kinds = {int: int, float: float, Path: click.Path(path_type=Path)}
    return click.option(flag, name, type=kinds.get(kind, str), **common)


def settings_options(*names: str) -> Callable[[Command], Command]:
    """The flags of settings ``names``, handed to the command as one ``settings`` argument
    (the environment, overridden by the flags given)."""
    known = fields()

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(**options: Any) -> Any:
            given = {n: options.pop(n) for n in names}
            return command(settings=load(**given), **options)

        for name in reversed(names):
            flag = flag_of(name, known[name])
            assert flag, f"setting {name} has no flag"
            run = _option(name, known[name], flag)(run)
        return run

    return decorate


def load(**given: Any) -> Settings:
    """Settings from the environment and the flags actually given; a bad value is a usage
    error that names it."""
    chosen = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    try:
        return Settings.load(**{k: v for k, v in chosen.items() if v not in (None, [])})
    except ValidationError as exc:
        raise click.UsageError(f"invalid settings:\n{exc}") from None


def flagged(*sections: str, leave: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every setting of ``sections`` that has a flag, but ``leave``."""
    return tuple(
        name
        for section in sections
        for name, info in SECTIONS[section].model_fields.items()
        if flag_of(name, info) and name not in leave
    )
