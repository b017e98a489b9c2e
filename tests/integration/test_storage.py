"""Migrations equal the models (storage parameters too); the vault's master key is generated
once and never silently replaced."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from conftest import run_sync
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
