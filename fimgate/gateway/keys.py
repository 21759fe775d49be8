"""Workspaces and their API keys: create, list, revoke, and check a presented key.

A key reads ``fg-<id>-<secret>``: the id (public, 12 hex characters) finds the row, and the
SHA-256 of the whole key is compared in constant time. The secret is 256 random bits and is
shown once, at creation; only its hash is stored, and nothing here ever logs a key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from fimgate.store.database import Database
from fimgate.store.tables import ApiKey, Workspace, utcnow

KEY_PREFIX = "fg-"
# What the server remembers of a workspace's editors' files (engines/context_memory.py).
MEMORY_SCOPES = ("off", "key", "workspace")


class AdminError(ValueError):
    """A management command that cannot be done (unknown workspace, duplicate name...)."""


class InvalidKey(Exception):
    """The presented key is unknown, malformed or revoked. The message never holds the key."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the workspace the key belongs to, and the key's public id."""

    workspace_id: int
    workspace: str
    key_id: str
    memory: str = "key"  # the workspace's: one of MEMORY_SCOPES


@dataclass(frozen=True)
class KeyInfo:
    id: str
    workspace: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def hint(self) -> str:
        return f"{KEY_PREFIX}{self.id}-…"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh (key id, full key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The public id inside a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key.removeprefix(KEY_PREFIX).partition("-")
    if not sep or len(key_id) != 12 or not secret:
        return None
    return key_id


class KeyStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    # -- workspaces -------------------------------------------------------------------------

    def create_workspace(self, name: str) -> None:
        name = name.strip()
        if not name or len(name) > 64:
            raise AdminError("a workspace name is 1 to 64 characters")
        with self._db.session() as session:
            if session.scalar(select(Workspace).where(Workspace.name == name)):
                raise AdminError(f"workspace {name!r} already exists")
            session.add(Workspace(name=name))

    def list_workspaces(self) -> list[tuple[str, datetime, int, str]]:
        """(name, created, active keys, memory) for every workspace."""
        active = (
            select(func.count(ApiKey.id))
            .where(ApiKey.workspace_id == Workspace.id, ApiKey.revoked_at.is_(None))
            .scalar_subquery()
        )
        with self._db.session() as session:
            rows = session.execute(
                select(Workspace.name, Workspace.created_at, active, Workspace.memory).order_by(
                    Workspace.name
                )
            )
            return [(name, created, count, memory) for name, created, count, memory in rows]

    def set_memory(self, name: str, memory: str) -> None:
        """What the gateway remembers of workspace ``name``'s editors: off, key, workspace."""
        if memory not in MEMORY_SCOPES:
            raise AdminError(f"memory is one of {', '.join(MEMORY_SCOPES)}")
        workspace_id = self.workspace_id(name)
        with self._db.session() as session:
            session.get_one(Workspace, workspace_id).memory = memory

    def memory_of(self, name: str) -> str:
        with self._db.session() as session:
            return session.get_one(Workspace, self.workspace_id(name)).memory

    def workspace_id(self, name: str) -> int:
        with self._db.session() as session:
            found = session.scalar(select(Workspace.id).where(Workspace.name == name))
        if found is None:
            raise AdminError(f"no workspace {name!r} (see `fimgate workspaces list`)")
        return found

    # -- keys -------------------------------------------------------------------------------

    def create_key(self, workspace: str, name: str | None = None) -> tuple[KeyInfo, str]:
        """Make a key; the full key is returned here and never again."""
        workspace_id = self.workspace_id(workspace)
        key_id, key = new_key()
        row = ApiKey(id=key_id, workspace_id=workspace_id, name=name, secret_sha256=_digest(key))
        with self._db.session() as session:
            session.add(row)
        return KeyInfo(key_id, workspace, name, row.created_at, None), key

    def list_keys(self, workspace: str | None = None) -> list[KeyInfo]:
        query = select(ApiKey, Workspace.name).join(Workspace).order_by(ApiKey.created_at)
        if workspace is not None:
            query = query.where(ApiKey.workspace_id == self.workspace_id(workspace))
        with self._db.session() as session:
            return [
                KeyInfo(key.id, ws, key.name, key.created_at, key.revoked_at)
                for key, ws in session.execute(query)
            ]

    def revoke(self, id_or_key: str) -> KeyInfo:
        """Revoke by public id or by the key itself; takes effect on the next request."""
        key_id = key_id_of(id_or_key) or id_or_key
        with self._db.session() as session:
            found = session.execute(
                select(ApiKey, Workspace.name).join(Workspace).where(ApiKey.id == key_id)
            ).first()
            if found is None:
                raise AdminError("no such key (give its id from `fimgate keys list`, or the key)")
            key, ws = found
            if key.revoked_at is None:
                key.revoked_at = utcnow()
            return KeyInfo(key.id, ws, key.name, key.created_at, key.revoked_at)

    def count_keys(self) -> int:
        with self._db.session() as session:
            return session.scalar(select(func.count(ApiKey.id))) or 0

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, key: str) -> Principal:
        key_id = key_id_of(key)
        if key_id is None:
            raise InvalidKey("the API key is not valid")
        # Core, not an ORM session: this runs on every request, and is ~10x cheaper.
        with self._db.engine.connect() as connection:
            found = connection.execute(
                select(
                    ApiKey.secret_sha256,
                    ApiKey.revoked_at,
                    Workspace.id,
                    Workspace.name,
                    Workspace.memory,
                )
                .join(Workspace)
                .where(ApiKey.id == key_id)
            ).first()
        # Compare even when the id is unknown, so timing says nothing about which ids exist.
        stored = found[0] if found else "0" * 64
        if not hmac.compare_digest(stored, _digest(key)) or found is None:
            raise InvalidKey("the API key is not valid")
        if found[1] is not None:
            raise InvalidKey("the API key has been revoked")
        memory = found[4] if found[4] in MEMORY_SCOPES else "key"
        return Principal(found[2], found[3], key_id, memory)

    def revoked_among(self, key_ids: set[str]) -> set[str]:
        """Which of ``key_ids`` are revoked or gone (what the server must forget of them)."""
        if not key_ids:
            return set()
        with self._db.engine.connect() as connection:
            active = connection.execute(
                select(ApiKey.id).where(ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_(None))
            )
            return key_ids - {row[0] for row in active}
