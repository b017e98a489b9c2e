"""Room on each page for in-place updates of the WhatsApp and replay tables (PostgreSQL)

A code check updates its code request twice (an attempt taken, then the code used), its number
once (verified) and the simulator's phone once; each request's replay key gets its reply just
after it is taken. None of those columns is indexed, so with room on the page PostgreSQL keeps
the new row version next to the old one and writes no index entry (a HOT update); on a full page
it writes one in every index of the table. ``fillfactor = 70`` leaves that room
(``numgate.db.tables.UPDATED_IN_PLACE``). It applies to pages written from now on; SQLite has no
such setting.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 20:10:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLES = ("waba_numbers", "waba_code_requests", "sandbox_phones", "replay_keys")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
