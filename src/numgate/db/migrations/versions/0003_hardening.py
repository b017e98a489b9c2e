"""hardening: account switch, deleted apps, callback URLs stored once, durable replay memory,
core operation names in key policies, unbounded phone items, PIN hashes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 17:00:00
"""

import hashlib
import json
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: the doors' old policy names → the core operation names (numgate/tenancy/operations.py);
#: ChatappVerifyAndRegister performs two of them
RENAMED: dict[str, tuple[str, ...]] = {
    "numbercheck:get": ("numbercheck:check",),
    "wa:login": ("whatsapp:signup",),
    "wa:createApp": ("whatsapp:createApp",),
    "wa:phoneList": ("whatsapp:listNumbers",),
    "wa:getCode": ("whatsapp:requestCode",),
    "wa:checkCode": ("whatsapp:verifyCode",),
    "wa:createClient": ("whatsapp:register",),
    "cams:GetPhoneNumberVerificationStatus": ("whatsapp:readNumber",),
    "cams:GetChatappVerifyCode": ("whatsapp:requestCode",),
    "cams:ChatappVerifyAndRegister": ("whatsapp:verifyCode", "whatsapp:register"),
    "cams:ChatappPhoneNumberRegister": ("whatsapp:register",),
    "cams:ChatappPhoneNumberDeregister": ("whatsapp:deregister",),
    "cams:AddChatappPhoneNumber": ("whatsapp:addNumber",),
    "cams:QueryChatappPhoneNumbers": ("whatsapp:listNumbers",),
    "cams:ChatappSyncPhoneNumber": ("whatsapp:syncNumbers",),
    "cams:QueryPhoneBusinessProfile": ("whatsapp:readProfile",),
    "cams:ModifyPhoneBusinessProfile": ("whatsapp:updateProfile",),
}


def receiver_of(url: str) -> str:
    """As numgate.delivery.urls.receiver_of (a migration does not import the application)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{parts.scheme}://[{host}]:{port}" if ":" in host else f"{parts.scheme}://{host}:{port}"


def upgrade() -> None:
    bind = op.get_bind()

    with op.batch_alter_table("accounts") as b:
        b.add_column(sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False))
    with op.batch_alter_table("apps") as b:
        b.add_column(sa.Column("deleted_ms", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("callback_batch", sa.Integer(), server_default="1", nullable=False))

    # key policies in core operation names
    keys = sa.table("access_keys", sa.column("access_key", sa.String), sa.column("allowed_actions", sa.Text))
    for key, allowed in bind.execute(sa.select(keys.c.access_key, keys.c.allowed_actions)).all():
        if allowed is None:
            continue
        names = sorted({new for old in json.loads(allowed) for new in RENAMED.get(old, (old,))})
        bind.execute(keys.update().where(keys.c.access_key == key).values(allowed_actions=json.dumps(names)))

    # callback URLs once, in their own table; receivers (scheme://host:port) in theirs
    op.create_table(
        "callback_receivers",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("receiver", sa.String(length=300), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("pace", sa.Text(), nullable=True),
        sa.Column("pace_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_receivers")),
        sa.UniqueConstraint("receiver", name=op.f("uq_callback_receivers_receiver")),
    )
    op.create_table(
        "callback_targets",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("receiver_id", sa.BigInteger(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["receiver_id"],
            ["callback_receivers.id"],
            name=op.f("fk_callback_targets_receiver_id_callback_receivers"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_targets")),
        sa.UniqueConstraint("url_hash", name=op.f("uq_callback_targets_url_hash")),
    )
    receivers = sa.table(
        "callback_receivers",
        sa.column("id", sa.BigInteger),
        sa.column("receiver", sa.String),
        sa.column("created_ms", sa.BigInteger),
    )
    targets = sa.table(
        "callback_targets",
        sa.column("id", sa.BigInteger),
        sa.column("url_hash", sa.String),
        sa.column("url", sa.Text),
        sa.column("receiver_id", sa.BigInteger),
        sa.column("created_ms", sa.BigInteger),
    )
    deliveries = sa.table(
        "deliveries",
        sa.column("url", sa.Text),
        sa.column("target_id", sa.BigInteger),
        sa.column("receiver_id", sa.BigInteger),
    )
    batches = sa.table("batches", sa.column("dr_url", sa.Text), sa.column("target_id", sa.BigInteger))
    with op.batch_alter_table("deliveries") as b:
        b.add_column(sa.Column("target_id", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("receiver_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("batches") as b:
        b.add_column(sa.Column("target_id", sa.BigInteger(), nullable=True))
    urls = {u for (u,) in bind.execute(sa.select(deliveries.c.url).distinct())}
    urls |= {u for (u,) in bind.execute(sa.select(batches.c.dr_url).distinct()) if u}
    receiver_ids: dict[str, int] = {}
    for url in sorted(urls):
        key = receiver_of(url)
        if key not in receiver_ids:
            bind.execute(receivers.insert().values(receiver=key, created_ms=0))
            receiver_ids[key] = bind.execute(
                sa.select(receivers.c.id).where(receivers.c.receiver == key)
            ).scalar_one()
        rid = receiver_ids[key]
        h = hashlib.sha256(url.encode()).hexdigest()
        bind.execute(targets.insert().values(url_hash=h, url=url, receiver_id=rid, created_ms=0))
        tid = bind.execute(sa.select(targets.c.id).where(targets.c.url_hash == h)).scalar_one()
        bind.execute(
            deliveries.update().where(deliveries.c.url == url).values(target_id=tid, receiver_id=rid)
        )
        bind.execute(batches.update().where(batches.c.dr_url == url).values(target_id=tid))
    with op.batch_alter_table("deliveries") as b:
        b.alter_column("target_id", existing_type=sa.BigInteger(), nullable=False)
        b.alter_column("receiver_id", existing_type=sa.BigInteger(), nullable=False)
        b.create_foreign_key(
            op.f("fk_deliveries_target_id_callback_targets"), "callback_targets", ["target_id"], ["id"]
        )
        b.drop_column("url")
        b.create_index("ix_deliveries_receiver_due", ["status", "receiver_id", "next_ms"], unique=False)
    with op.batch_alter_table("batches") as b:
        b.create_foreign_key(
            op.f("fk_batches_target_id_callback_targets"), "callback_targets", ["target_id"], ["id"]
        )
        b.drop_column("dr_url")

    op.create_table(
        "replay_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=300), nullable=False),
        sa.Column("reply", sa.LargeBinary(), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_replay_keys")),
    )
    op.create_index("ix_replay_keys_expires", "replay_keys", ["expires_ms"], unique=False)

    # the pull feed (POST /api/number/results): an account's results in the order they finished
    with op.batch_alter_table("checks") as b:
        b.create_index("ix_checks_results", ["account_id", "status", "done_ms", "id"], unique=False)

    # the spendable balance as a projection of the ledger, kept in step with each entry
    op.create_table(
        "balances",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_balances_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "currency", name=op.f("pk_balances")),
    )
    le = sa.table(
        "ledger_entries",
        sa.column("account_id", sa.Integer),
        sa.column("currency", sa.String),
        sa.column("kind", sa.String),
        sa.column("amount", sa.BigInteger),
    )
    effect = sa.case(
        (le.c.kind.in_(["topup", "release"]), le.c.amount), (le.c.kind == "reserve", -le.c.amount), else_=0
    )
    totals = bind.execute(
        sa.select(le.c.account_id, le.c.currency, sa.func.sum(effect)).group_by(
            le.c.account_id, le.c.currency
        )
    ).all()
    bal = sa.table(
        "balances",
        sa.column("account_id", sa.Integer),
        sa.column("currency", sa.String),
        sa.column("available", sa.BigInteger),
        sa.column("updated_ms", sa.BigInteger),
    )
    for account_id, currency, available in totals:
        bind.execute(
            bal.insert().values(
                account_id=account_id, currency=currency, available=int(available), updated_ms=0
            )
        )

    # phone items are bounded by the request body; PIN hashes are argon2 strings
    for table, column, nullable in (("checks", "phone", False), ("sandbox_phones", "pin_hash", True)):
        with op.batch_alter_table(table) as b:
            b.alter_column(column, type_=sa.Text(), existing_type=sa.String(64), existing_nullable=nullable)


def downgrade() -> None:  # pragma: no cover - numgate migrates forward only
    raise NotImplementedError("numgate migrations go forward only")
