"""Model names clients may send, the engine behind each, and the memory of each editor
they share (sessions.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fimgate.engines.base import Engine
from fimgate.engines.sessions import EditorSessions


@dataclass
class ServedModel:
    name: str
    engine: Engine
    aliases: tuple[str, ...] = ()
    description: str = ""


class UnknownModel(LookupError):
    def __init__(self, requested: str, available: list[str]) -> None:
        super().__init__(
            f"model {requested!r} is not served here; available: {', '.join(available)}"
        )
        self.requested = requested


@dataclass
class ModelRegistry:
    models: list[ServedModel] = field(default_factory=list)
    sessions: EditorSessions = field(default_factory=EditorSessions)

    def add(self, model: ServedModel) -> None:
        taken = set(self.names())
        clash = taken & {model.name, *model.aliases}
        if clash:
            raise ValueError(f"model name(s) {sorted(clash)} already served")
        self.models.append(model)

    def names(self) -> list[str]:
        return [n for m in self.models for n in (m.name, *m.aliases)]

    def resolve(self, name: str) -> ServedModel:
        for model in self.models:
            if name == model.name or name in model.aliases:
                return model
        raise UnknownModel(name, self.names())
