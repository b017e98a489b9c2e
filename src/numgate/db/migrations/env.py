"""Alembic environment: always run with a connection handed in by numgate.db.migrate."""

from __future__ import annotations

from alembic import context

from numgate.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - numgate always passes its connection
    raise RuntimeError("run migrations with `numgate migrate`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
