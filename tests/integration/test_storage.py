"""Migrations equal the models (storage parameters too); the vault's master key is generated
once and never silently replaced."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conftest import PG_URL, run_sync
from numgate.db import tables
from numgate.db.engine import create_engine
from numgate.db.migrate import ensure_current, upgrade
from numgate.db.tables import metadata
from numgate.errors import ConfigurationError, SchemaOutOfDate
from numgate.gateway import open_gateway
from numgate.settings import Settings


def test_migrations_equal_the_models(database_url: str) -> None:
    async def main() -> list[object]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), metadata)
                )
        finally:
            await engine.dispose()

    assert run_sync(main()) == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own with no schema (on PostgreSQL, one created next to the tests' own
    and dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'numgate.db'}"
        return
    if not PG_URL:
        pytest.skip("NUMGATE_TEST_POSTGRES_URL is not set: PostgreSQL case NOT run")
    parts = urlsplit(PG_URL)
    name = parts.path.lstrip("/") + "_migrations"
    admin = urlunsplit(parts._replace(path="/postgres"))

    async def sql(statement: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    run_sync(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    run_sync(sql(f'CREATE DATABASE "{name}"'))
    yield urlunsplit(parts._replace(path="/" + name))
    run_sync(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_dropping_the_per_number_foreign_keys_keeps_the_rows(empty_database: str) -> None:
    """Migration 0008 drops the foreign keys of ``checks.batch_id`` and ``deliveries.target_id``
    (SQLite by copying both tables): on a database that holds numbers and callbacks, every row is
    still there afterwards, the schema — indexes included — equals the models, and a callback
    may then name a target the check would have refused."""
    t = tables

    def delivery(uid: str, check_id: int | None, target_id: int, status: int) -> Any:
        return t.deliveries.insert().values(
            uid=uid,
            check_id=check_id,
            account_id=1,
            app_id=1,
            target_id=target_id,
            receiver_id=1,
            body="{}",
            status=status,
            next_ms=0,
            deadline_ms=9,
            created_ms=0,
            updated_ms=0,
        )

    async def main() -> None:
        engine = create_engine(empty_database)
        try:
            await upgrade(engine, "0007")
            async with engine.begin() as conn:
                await conn.execute(t.accounts.insert().values(id=1, name="a", created_ms=0))
                await conn.execute(
                    t.apps.insert().values(
                        id=1, account_id=1, appkey="k", name="app", secret_enc="s", created_ms=0
                    )
                )
                await conn.execute(
                    t.callback_receivers.insert().values(id=1, receiver="http://r:80", created_ms=0)
                )
                await conn.execute(
                    t.callback_targets.insert().values(
                        id=1, url_hash="h", url="http://r/cb", receiver_id=1, created_ms=0
                    )
                )
                await conn.execute(
                    t.batches.insert().values(
                        id=1,
                        message_id="m",
                        account_id=1,
                        app_id=1,
                        batch_no="b",
                        check_level=1,
                        currency="USD",
                        unit_price=10,
                        total=3,
                        created_ms=0,
                        target_id=1,
                    )
                )
                for i in range(3):
                    await conn.execute(
                        t.checks.insert().values(
                            id=i + 1,
                            batch_id=1,
                            account_id=1,
                            seq=i,
                            phone=f"+23480312345{i}",
                            message_id=f"m{i}",
                            status=2,
                            outcome=0,
                            result="{}",
                            cost=10,
                            done_ms=5,
                        )
                    )
                    await conn.execute(delivery(f"u{i}", i + 1, target_id=1, status=i % 2))
            await upgrade(engine)
            async with engine.connect() as conn:
                assert (
                    await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
                    == []
                )
                checks = (await conn.execute(t.checks.select().order_by(t.checks.c.id))).all()
                delivered = (await conn.execute(t.deliveries.select().order_by(t.deliveries.c.id))).all()
            assert [(r.batch_id, r.phone, r.status, r.cost) for r in checks] == [
                (1, f"+23480312345{i}", 2, 10) for i in range(3)
            ]
            assert [(r.uid, r.check_id, r.target_id, r.status) for r in delivered] == [
                (f"u{i}", i + 1, 1, i % 2) for i in range(3)
            ]
            async with engine.begin() as conn:  # no foreign key left to refuse it
                await conn.execute(delivery("u9", None, target_id=999, status=0))
        finally:
            await engine.dispose()

    run_sync(main())


def test_storage_parameters_equal_the_models(database_url: str) -> None:
    """(PostgreSQL) Each table's storage parameters after the migrations are those its model
    declares (``postgresql_with``, e.g. the fillfactor of tables updated in place); the
    comparison above does not look at them."""
    if not database_url.startswith("postgresql"):
        pytest.skip("storage parameters are PostgreSQL's; SQLite has none")

    async def main() -> dict[str, list[str]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT relname, coalesce(reloptions, '{}') AS options FROM pg_class "
                "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            )
            return {r["relname"]: sorted(r["options"]) for r in rows}
        finally:
            await conn.close()

    stored = run_sync(main())
    declared = {
        t.name: sorted(f"{k}={v}" for k, v in (t.dialect_options["postgresql"]["with"] or {}).items())
        for t in metadata.sorted_tables
    }
    assert {name: stored.get(name) for name in declared} == declared
    assert declared["waba_code_requests"] == ["fillfactor=70"]


def test_schema_check_names_the_command(tmp_path: Path) -> None:
    async def main() -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
        try:
            with pytest.raises(SchemaOutOfDate, match="numgate migrate"):
                await ensure_current(engine)
            await upgrade(engine)
            await ensure_current(engine)
        finally:
            await engine.dispose()

    run_sync(main())


def test_master_key_generated_once_then_required(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(data_dir=tmp_path)

    async def migrate_and_open() -> None:
        engine = create_engine(s.resolved_database_url)
        await upgrade(engine)
        await engine.dispose()
        core = await open_gateway(s)
        await core.tenancy.create_account("a")
        await core.close()

    with caplog.at_level(logging.WARNING, logger="numgate.vault"):
        run_sync(migrate_and_open())
    assert "generated" in caplog.text
    key = (tmp_path / "secret.key").read_bytes()
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0
    caplog.clear()
    run_sync(migrate_and_open())  # same key reused, no new warning
    assert (tmp_path / "secret.key").read_bytes() == key and "generated" not in caplog.text

    (tmp_path / "secret.key").unlink()
    with pytest.raises(ConfigurationError, match="missing"):
        run_sync(open_gateway(s))
    assert not (tmp_path / "secret.key").exists()

    from cryptography.fernet import Fernet

    with pytest.raises(ConfigurationError, match="not the one"):
        run_sync(open_gateway(s.with_overrides(secret_key=Fernet.generate_key().decode())))
    core = run_sync(open_gateway(s.with_overrides(secret_key=key.decode().strip())))
    run_sync(core.close())


def test_settings_from_env() -> None:
    s = Settings.from_env({"NUMGATE_CALLBACK_ALLOW": "loopback, 10.0.0.0/8", "NUMGATE_PORT": "9000"})
    assert s.port == 9000 and len(s.callback_allow) == 3
    with pytest.raises(ConfigurationError, match="NUMGATE_CALLBACK_ALLOW"):
        Settings.from_env({"NUMGATE_CALLBACK_ALLOW": "nonsense"})
    with pytest.raises(ConfigurationError, match="integer"):
        Settings.from_env({"NUMGATE_PORT": "x"})
    assert Settings.from_env({}).resolved_database_url.startswith("sqlite+aiosqlite:///")
