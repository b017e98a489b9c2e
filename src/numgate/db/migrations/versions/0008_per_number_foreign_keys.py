"""No foreign-key check on the rows written once per number (checks, deliveries)

``checks.batch_id`` (→ ``batches``) and ``deliveries.target_id`` (→ ``callback_targets``) were
checked on every row inserted: on PostgreSQL a lookup of the parent row and a key-share lock on
it, per number, and the callbacks of one URL all lock the same target row. Their parents are
written before them and never deleted (a batch in the transaction that stores its numbers; a
callback URL committed before its id is handed out), so the check never had anything to
catch. Measured on PostgreSQL (``bench/numbercheck_e2e.py --workers 1 --postgres …``, three
alternating pairs): the server's CPU 89–99 → 74–76 µs a number. See ``numgate.db.tables``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 19:40:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# (table, constraint, column, parent table)
KEYS = (
    ("checks", "fk_checks_batch_id_batches", "batch_id", "batches"),
    ("deliveries", "fk_deliveries_target_id_callback_targets", "target_id", "callback_targets"),
)


def upgrade() -> None:
    # SQLite cannot drop a constraint: batch mode copies the table (its indexes included)
    for table, name, _column, _parent in KEYS:
        with op.batch_alter_table(table) as b:
            b.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    for table, name, column, parent in KEYS:
        with op.batch_alter_table(table) as b:
            b.create_foreign_key(name, parent, [column], ["id"])
