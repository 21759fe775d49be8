"""The usage ledger: one row per FIM request that got past authentication.

A row is committed before the last byte of its answer is sent (see ``api.middleware``), so a
client that has its answer also has its row, even if the server is killed the next instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select

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

    def to_json(self) -> dict[str, object]:
        row = asdict(self)
        row["created_at"] = self.created_at.isoformat()
        return row


class UsageLedger:
    def __init__(self, database: Database) -> None:
        self._db = database

    def record(self, row: dict[str, object]) -> None:
        """Insert one row (UsageRecord's columns) and commit; Core, as it runs per request."""
        with self._db.engine.begin() as connection:
            connection.execute(insert(UsageRecord), row)

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
                )
                for r, ws in session.execute(query)
            ]
        return found[::-1]
