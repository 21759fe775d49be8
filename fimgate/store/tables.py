"""The tables: workspaces, their API keys and rate-limit overrides, and the usage ledger.

Times are stored in UTC. Keys are stored only as a SHA-256 of the whole key: keys are 256-bit
random, so a fast hash is enough (there is nothing to brute-force) and lookups stay cheap.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # What the gateway remembers of its editors' files, and who reads it: off, key (each
    # key its own), workspace (its keys share). engines/context_memory.py.
    memory: Mapped[str] = mapped_column(String(16), default="key", server_default="key")


class ApiKey(Base):
    __tablename__ = "api_keys"

    # The public half of the key (``fg-<id>-<secret>``): safe to show, log and revoke by.
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RateLimitOverride(Base):
    """Per-workspace limits; ``model`` "" applies to every model without its own row."""

    __tablename__ = "rate_limits"
    __table_args__ = (UniqueConstraint("workspace_id", "model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"))
    model: Mapped[str] = mapped_column(String(128), default="")
    rpm: Mapped[int | None] = mapped_column(Integer)  # None: inherit
    tpm: Mapped[int | None] = mapped_column(Integer)


class UsageRecord(Base):
    """One row per completion request that got past authentication, whatever its outcome."""

    __tablename__ = "usage"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    # The wire it came on (fim, infill, completions, tabby, ollama...); NULL: before routes.
    route: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id"), index=True)
    key_id: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The key's previous completion, judged by this request's prompt (gateway/acceptance.py):
    # its length, and how much of it the prompt now holds; NULL when there was none to judge.
    prev_shown_chars: Mapped[int | None] = mapped_column(Integer)
    prev_accepted_chars: Mapped[int | None] = mapped_column(Integer)
