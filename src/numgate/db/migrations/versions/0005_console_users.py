"""console users: people who sign in to /console (an operator, or a tenant bound to one account)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 20:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(length=254), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_sign_in_ms", sa.BigInteger(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("console_users")
