"""The usage ledger: one row per FIM request that got past authentication.

A row is committed before the last byte of its answer is sent (see ``api.middleware``), so a
client that has its answer also has its row, even if the server is killed the next instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update

from fimgate.store.database import Database
from fimgate.store.tables import UsageRecord, Workspace


@dataclass(frozen=True)
class UsageRow:
    request_id: str
    created_at: datetime
    workspace: str
    key_id: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    status: int
    latency_ms: float
    cancelled: bool
    prev_shown_chars: int | None = None
    prev_accepted_chars: int | None = None
    route: str | None = None  # the wire it came on (NULL in rows from before routes)

    def to_json(self) -> dict[str, object]:
        row = asdict(self)
        row["created_at"] = self.created_at.isoformat()
        return row


@dataclass(frozen=True)
class Acceptance:
    """Inferred acceptance of one workspace's key on one model (gateway/acceptance.py)."""

    workspace: str
    key_id: str
    model: str | None
    judged: int
    accepted: int
    shown_chars: int
    accepted_chars: int

    @property
    def rate(self) -> float:
        return self.accepted / self.judged if self.judged else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "rate": round(self.rate, 4)}


class UsageLedger:
    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, row: dict[str, object]) -> None:
        """Insert one row (UsageRecord's columns) and commit; Core, as it runs per request."""
        with self._db.engine.begin() as connection:
            connection.execute(insert(UsageRecord), row)

    def amend_status(self, request_id: str, status: int) -> None:
        """Set the status of a row written after its answer was given up on (core.settle)."""
        with self._db.engine.begin() as connection:
            late = update(UsageRecord).where(UsageRecord.request_id == request_id)
            connection.execute(late.values(status=status))

    def acceptance(
        self, workspace: str | None = None, since: datetime | None = None
    ) -> list[Acceptance]:
        """Judged completions per workspace, key and model."""
        judged = UsageRecord.prev_shown_chars.is_not(None)
        query = (
            select(
                Workspace.name, UsageRecord.key_id, UsageRecord.model,
                func.count(), func.count().filter(UsageRecord.prev_accepted_chars > 0),
                func.coalesce(func.sum(UsageRecord.prev_shown_chars), 0),
                func.coalesce(func.sum(UsageRecord.prev_accepted_chars), 0),
            )
            .join(Workspace)
            .where(judged)
            .group_by(Workspace.name, UsageRecord.key_id, UsageRecord.model)
            .order_by(Workspace.name, UsageRecord.key_id, UsageRecord.model)
        )  # fmt: skip
        if workspace is not None:
            query = query.where(Workspace.name == workspace)
        if since is not None:
            query = query.where(UsageRecord.created_at >= since)
        with self._db.session() as session:
            return [Acceptance(*row) for row in session.execute(query)]

    def rows(
        self, workspace: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[UsageRow]:
        """Rows oldest first (the newest ``limit`` of them, when given)."""
        query = select(UsageRecord, Workspace.name).join(Workspace)
        if workspace is not None:
            query = query.where(Workspace.name == workspace)
        if since is not None:
            query = query.where(UsageRecord.created_at >= since)
        query = query.order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._db.session() as session:
            found = [
                UsageRow(
                    request_id=r.request_id,
                    # SQLite hands datetimes back without their zone; they are stored in UTC.
                    created_at=r.created_at.replace(tzinfo=r.created_at.tzinfo or UTC),
                    workspace=ws,
                    key_id=r.key_id,
                    model=r.model,
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    status=r.status,
                    latency_ms=r.latency_ms,
                    cancelled=r.cancelled,
                    prev_shown_chars=r.prev_shown_chars,
                    prev_accepted_chars=r.prev_accepted_chars,
                    route=r.route,
                )
                for r, ws in session.execute(query)
            ]
        return found[::-1]
