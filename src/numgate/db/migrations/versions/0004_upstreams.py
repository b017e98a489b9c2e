"""upstreams: the operator's vendor accounts, routes, the live-result cache, numbers waiting for a
vendor's webhook, upstream costs; cache prices and accepted ages

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 19:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("apps") as b:
        b.add_column(sa.Column("max_age_s", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("prices") as b:
        b.add_column(sa.Column("cached_price", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("batches") as b:
        b.add_column(sa.Column("cached_price", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("max_age_s", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("checks") as b:
        b.add_column(sa.Column("route_pos", sa.SmallInteger(), server_default="0", nullable=False))
        b.add_column(sa.Column("source", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("observed_ms", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("due_ms", sa.BigInteger(), nullable=True))
        b.create_index("ix_checks_waiting", ["status", "due_ms"], unique=False)

    op.create_table(
        "upstreams",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("secret_enc", sa.Text(), nullable=True),
        sa.Column("from_number", sa.String(length=32), nullable=True),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("unit_cost", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("cost_currency", sa.String(length=3), server_default="USD", nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("health", sa.Text(), nullable=True),
        sa.Column("health_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstreams")),
        sa.UniqueConstraint("name", name=op.f("uq_upstreams_name")),
    )
    op.create_table(
        "routes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("upstreams", sa.Text(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("level", "country", name=op.f("pk_routes")),
    )
    op.create_table(
        "live_results",
        sa.Column("e164", sa.String(length=20), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("observed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("e164", "level", name=op.f("pk_live_results")),
    )
    op.create_table(
        "upstream_jobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("check_id", sa.BigInteger(), nullable=False),
        sa.Column("upstream", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("vendor_ref", sa.String(length=128), nullable=True),
        sa.Column("events", sa.Text(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_jobs")),
        sa.UniqueConstraint("check_id", name=op.f("uq_upstream_jobs_check_id")),
        sa.UniqueConstraint("token", name=op.f("uq_upstream_jobs_token")),
    )
    op.create_index("ix_upstream_jobs_vendor_ref", "upstream_jobs", ["vendor_ref"], unique=False)
    op.create_table(
        "upstream_calls",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("check_id", sa.BigInteger(), nullable=True),
        sa.Column("upstream", sa.String(length=64), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_calls")),
    )
    op.create_index("ix_upstream_calls_created", "upstream_calls", ["created_ms"], unique=False)


def downgrade() -> None:  # pragma: no cover - numgate migrates forward only
    raise NotImplementedError("numgate migrates forward only: restore a backup to go back")
