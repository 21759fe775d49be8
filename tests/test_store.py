"""Keys, limits and the ledger on the real databases: SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from fimgate.gateway.keys import AdminError, InvalidKey, KeyStore, key_id_of
from fimgate.gateway.limits import LimitBook, Limits
from fimgate.gateway.usage import UsageLedger
from fimgate.store.database import MIGRATIONS, Database, open_database
from fimgate.store.tables import ApiKey
from tests.conftest import sqlite_url


@pytest.fixture(params=[pytest.param("sqlite", marks=pytest.mark.fast), "postgres"])
def database(request: pytest.FixtureRequest) -> Database:
    if request.param == "sqlite":
        url = sqlite_url("store-unit")
    else:
        url = request.getfixturevalue("postgres").new_database()
    db = open_database(url)
    yield db
    db.close()


def test_migrations_run_once_and_again(database: Database) -> None:
    database.migrate()  # a second run finds the schema current
    with database.session() as s:
        assert s.execute(text("select version_num from alembic_version")).scalar() == "0004"


@pytest.mark.fast
def test_a_ledger_of_the_first_schema_keeps_its_rows_on_upgrade() -> None:
    url = sqlite_url("store-upgrade")
    database = Database(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")  # a server of before acceptance was recorded
    with database.engine.begin() as connection:  # rows as that schema's server wrote them
        connection.execute(
            text(
                "insert into workspaces (id, name, created_at) values "
                "(1, 'old', '2026-11-30 09:00:00');"
            )
        )
        connection.execute(
            text(
                "insert into api_keys (id, workspace_id, secret_sha256, created_at) values "
                "('0123456789ab', 1, :digest, '2026-11-30 09:00:00')"
            ),
            {"digest": "0" * 64},
        )
        connection.execute(
            text(
                "insert into usage (request_id, created_at, workspace_id, key_id, model, "
                "prompt_tokens, completion_tokens, status, latency_ms, cancelled) values "
                "('cmpl-old', '2026-11-30 10:00:00', 1, '0123456789ab', 'm', 5, 2, 200, 9.5, 0)"
            )
        )
    database.migrate()
    (row,) = UsageLedger(database).rows()
    assert (row.request_id, row.prompt_tokens, row.prev_shown_chars) == ("cmpl-old", 5, None)
    assert KeyStore(database).memory_of("old") == "key"  # memory per key, as before sharing
    database.close()


def test_key_lifecycle(database: Database) -> None:
    keys = KeyStore(database)
    keys.create_workspace("acme")
    info, key = keys.create_key("acme", "alice")
    assert key.startswith("fg-") and key_id_of(key) == info.id
    assert len(key) > 40  # 12-char id + 256-bit secret
    principal = keys.authenticate(key)
    assert (principal.workspace, principal.key_id) == ("acme", info.id)

    # Only a hash is stored: the secret appears nowhere in the row.
    with database.session() as s:
        row = s.scalars(select(ApiKey)).one()
        assert key not in repr(row.__dict__) and key.split("-", 2)[2] not in row.secret_sha256

    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "fg-nothing", "sk-123", ""):
        with pytest.raises(InvalidKey) as caught:
            keys.authenticate(wrong)
        assert wrong not in str(caught.value) or not wrong

    keys.revoke(info.id)
    with pytest.raises(InvalidKey, match="revoked"):
        keys.authenticate(key)
    assert keys.list_keys("acme")[0].revoked_at is not None


def test_revoke_by_the_key_itself(database: Database) -> None:
    keys = KeyStore(database)
    keys.create_workspace("w")
    _, key = keys.create_key("w")
    _, other = keys.create_key("w")
    keys.revoke(key)
    with pytest.raises(InvalidKey):
        keys.authenticate(key)
    assert keys.authenticate(other).workspace == "w"  # only that key
    with pytest.raises(AdminError):
        keys.revoke("000000000000")


def test_admin_errors(database: Database) -> None:
    keys = KeyStore(database)
    keys.create_workspace("w")
    with pytest.raises(AdminError, match="already exists"):
        keys.create_workspace("w")
    with pytest.raises(AdminError, match="no workspace"):
        keys.create_key("missing")
    with pytest.raises(AdminError, match="at least 1"):
        LimitBook(database, Limits(5, 5)).set("w", None, 0, None)


def test_limits_resolve_model_then_workspace_then_default(database: Database) -> None:
    keys = KeyStore(database)
    keys.create_workspace("a")
    keys.create_workspace("b")
    book = LimitBook(database, Limits(rpm=500, tpm=60_000))
    a, b = keys.workspace_id("a"), keys.workspace_id("b")
    assert book.resolve(a, "m") == Limits(500, 60_000)
    book.set("a", None, rpm=10, tpm=None)
    book.set("a", "m", rpm=None, tpm=99)
    assert book.resolve(a, "m") == Limits(10, 99)  # field by field
    assert book.resolve(a, "other") == Limits(10, 60_000)
    assert book.resolve(b, "m") == Limits(500, 60_000)
    book.set("a", "m", rpm=7, tpm=None)  # updates the same row
    assert book.resolve(a, "m") == Limits(7, 99)
    assert len(book.overrides("a")) == 2
    # An override set under an alias (codestral-latest) applies to the served model.
    book.set("b", "alias", rpm=3, tpm=None)
    assert book.resolve(b, "m", aliases=("alias",)) == Limits(3, 60_000)
    book.set("b", "m", rpm=4, tpm=None)  # the served name's own row wins
    assert book.resolve(b, "m", aliases=("alias",)) == Limits(4, 60_000)


def test_ledger_rows_filter_by_workspace_and_time(database: Database) -> None:
    keys = KeyStore(database)
    for name in ("a", "b"):
        keys.create_workspace(name)
    ledger = UsageLedger(database)
    now = datetime.now(UTC)
    for i, (ws, age) in enumerate([("a", 120), ("a", 1), ("b", 1)]):
        ledger.record(
            dict(
                request_id=f"r{i}", created_at=now - timedelta(minutes=age),
                workspace_id=keys.workspace_id(ws), key_id="k", model="m", prompt_tokens=10,
                completion_tokens=i, status=200, latency_ms=5.0, cancelled=False,
            )
        )  # fmt: skip
    assert [r.request_id for r in ledger.rows()] == ["r0", "r1", "r2"]
    assert [r.request_id for r in ledger.rows("a")] == ["r0", "r1"]
    recent = ledger.rows(since=now - timedelta(minutes=5))
    assert [r.request_id for r in recent] == ["r1", "r2"]
    assert recent[0].created_at.tzinfo is not None
    assert abs((recent[0].created_at - (now - timedelta(minutes=1))).total_seconds()) < 1
    assert [r.request_id for r in ledger.rows(limit=1)] == ["r2"]
