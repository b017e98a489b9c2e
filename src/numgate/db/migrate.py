"""Alembic, driven from code: ``numgate migrate`` and the start-up schema check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from numgate.db.engine import writing
from numgate.db.errors import translated
from numgate.errors import SchemaOutOfDate

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


async def current_revisions(engine: AsyncEngine) -> set[str]:
    async def read() -> set[str]:
        async with engine.connect() as conn:
            heads = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())
            await conn.rollback()
        return set(heads)

    return await translated(read())


async def upgrade(engine: AsyncEngine, target: str = "head") -> None:
    async def run() -> None:
        async with writing(engine) as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), target))

    await translated(run())


async def ensure_current(engine: AsyncEngine) -> None:
    """Raise :class:`SchemaOutOfDate` with the command to run if the schema is behind."""
    current, heads = await current_revisions(engine), head_revisions()
    if current != heads:
        have = ", ".join(sorted(current)) or "no schema at all"
        raise SchemaOutOfDate(
            f"the database schema is out of date (it has {have}; this numgate needs "
            f"{', '.join(sorted(heads))}). Run `numgate migrate` first."
        )
