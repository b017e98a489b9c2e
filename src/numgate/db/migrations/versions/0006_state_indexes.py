"""Partial indexes, one per state, on the work tables (checks, deliveries)

A row sits in the index of its state only, so a number claimed, finished and called back moves
between small indexes instead of rewriting an entry in every index led by ``status`` (see
``numgate.db.tables``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:40:00
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _state(state: int) -> dict[str, Any]:
    where = sa.text(f"status = {state}")
    return {"sqlite_where": where, "postgresql_where": where}


def upgrade() -> None:
    op.drop_index("ix_checks_claim", table_name="checks")
    op.drop_index("ix_checks_results", table_name="checks")
    op.drop_index("ix_checks_waiting", table_name="checks")
    op.create_index("ix_checks_pending", "checks", ["account_id", "id"], **_state(0))
    op.create_index("ix_checks_leased", "checks", ["lease_token"], **_state(1))
    op.create_index("ix_checks_done", "checks", ["account_id", "done_ms", "id"], **_state(2))
    op.create_index("ix_checks_waiting", "checks", ["due_ms"], **_state(3))
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    op.drop_index("ix_deliveries_receiver_due", table_name="deliveries")
    op.create_index("ix_deliveries_pending", "deliveries", ["receiver_id", "next_ms"], **_state(0))
    op.create_index("ix_deliveries_pending_due", "deliveries", ["next_ms"], **_state(0))
    op.create_index("ix_deliveries_leased", "deliveries", ["lease_token"], **_state(1))
    op.create_index("ix_deliveries_failed", "deliveries", ["account_id", "receiver_id"], **_state(3))


def downgrade() -> None:
    for name in (
        "ix_deliveries_failed",
        "ix_deliveries_leased",
        "ix_deliveries_pending_due",
        "ix_deliveries_pending",
    ):
        op.drop_index(name, table_name="deliveries")
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_ms"])
    op.create_index("ix_deliveries_receiver_due", "deliveries", ["status", "receiver_id", "next_ms"])
    for name in ("ix_checks_waiting", "ix_checks_done", "ix_checks_leased", "ix_checks_pending"):
        op.drop_index(name, table_name="checks")
    op.create_index("ix_checks_claim", "checks", ["status", "account_id", "id"])
    op.create_index("ix_checks_results", "checks", ["account_id", "status", "done_ms", "id"])
    op.create_index("ix_checks_waiting", "checks", ["status", "due_ms"])
