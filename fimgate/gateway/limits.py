"""Which limits apply to a (workspace, model): its own override, else the workspace's
all-models override, else the server defaults (the hosted service's 500 RPM / 60,000 TPM).

Overrides are read from the database on every request, so ``fimgate limits set`` applies to
the next request on every replica, with no restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from fimgate.gateway.keys import AdminError, KeyStore
from fimgate.store.database import Database
from fimgate.store.tables import RateLimitOverride, Workspace

ALL_MODELS = ""


@dataclass(frozen=True)
class Limits:
    rpm: int  # requests per minute
    tpm: int  # tokens (prompt + completion) per minute


class LimitBook:
    def __init__(self, database: Database, defaults: Limits) -> None:
        self._db = database
        self.defaults = defaults

    def resolve(self, workspace_id: int, model: str, aliases: tuple[str, ...] = ()) -> Limits:
        """``model`` is the served name; an override set under one of its ``aliases`` (say
        codestral-latest) counts too, below one set under the served name itself."""
        override = RateLimitOverride
        with self._db.engine.connect() as connection:  # Core: this runs on every request
            rows = connection.execute(
                select(override.model, override.rpm, override.tpm).where(
                    override.workspace_id == workspace_id,
                    override.model.in_((model, *aliases, ALL_MODELS)),
                )
            ).all()
        # Field by field: the served name's row wins over an alias's, which wins over "all".
        rank = {ALL_MODELS: 0, **dict.fromkeys(aliases, 1), model: 2}
        rpm, tpm = self.defaults.rpm, self.defaults.tpm
        for row in sorted(rows, key=lambda r: rank[r.model]):
            rpm = row.rpm if row.rpm is not None else rpm
            tpm = row.tpm if row.tpm is not None else tpm
        return Limits(rpm=rpm, tpm=tpm)

    def set(self, workspace: str, model: str | None, rpm: int | None, tpm: int | None) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise AdminError(f"{name} must be at least 1")
        workspace_id = KeyStore(self._db).workspace_id(workspace)
        key = model or ALL_MODELS
        with self._db.session() as session:
            row = session.scalar(
                select(RateLimitOverride).where(
                    RateLimitOverride.workspace_id == workspace_id,
                    RateLimitOverride.model == key,
                )
            )
            if row is None:
                row = RateLimitOverride(workspace_id=workspace_id, model=key)
                session.add(row)
            if rpm is not None:
                row.rpm = rpm
            if tpm is not None:
                row.tpm = tpm

    def overrides(
        self, workspace: str | None = None
    ) -> list[tuple[str, str, int | None, int | None]]:
        """(workspace, model or "*", rpm, tpm) for every override row."""
        query = (
            select(Workspace.name, RateLimitOverride)
            .join(Workspace)
            .order_by(Workspace.name, RateLimitOverride.model)
        )
        if workspace is not None:
            query = query.where(Workspace.name == workspace)
        with self._db.session() as session:
            return [(ws, row.model or "*", row.rpm, row.tpm) for ws, row in session.execute(query)]
