"""numgate's tables (SQLAlchemy Core). Times are epoch milliseconds (BigInteger) so that SQLite
and PostgreSQL compare them the same way; money is an integer in ten-thousandths of the unit
(4 decimals, as the NXCloud ``price`` field)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CompoundSelect
from sqlalchemy.types import TypeEngine

#: (PostgreSQL) the storage parameters of a table whose rows are updated soon after they are
#: written, in columns no index covers (a code's attempts, a number verified, a replay key's
#: reply): room left on each page keeps the new version on the same page, so the update writes
#: no index entry (a HOT update) instead of one in every index of the table. Set by migration
#: 0007; not for the work tables, whose updates change the state their partial indexes cover.
UPDATED_IN_PLACE = {"fillfactor": 70}

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger that is still SQLite's INTEGER PRIMARY KEY (rowid alias, autoincrementing)
BigId = BigInteger().with_variant(Integer(), "sqlite")


# The work tables (``checks``, ``deliveries``) move each row through a few states (``status``).
# Their indexes are partial, one per state a query looks for: a row is in the index of its
# state only, so moving it on removes one entry and adds one, where an index led by ``status``
# would rewrite an entry in every such index, and a finished row (nearly all of them) weighs on
# none of the busy ones. A query reaches a state's index by naming the state as a literal
# (``in_state``): PostgreSQL's generic plans for prepared statements (asyncpg prepares every
# statement) cannot match a partial index to a bound parameter.
def in_state(column: ColumnElement[Any], state: int) -> ColumnElement[bool]:
    """``status = <state>`` with the state a literal (see above)."""
    return column == literal_column(str(int(state)))


def any_of(
    column: ColumnElement[Any], name: str, type_: TypeEngine[Any] | None = None
) -> ColumnElement[bool]:
    """``column = ANY(:name)`` (PostgreSQL), ``name`` bound to a list of values typed as an array
    of ``type_`` (the column's type unless given)."""
    return column == any_(bindparam(name, type_=ARRAY(type_ if type_ is not None else column.type)))


def count_in_states(table: Table, states: Iterable[int], *by: ColumnElement[Any]) -> CompoundSelect[Any]:
    """How many rows of ``table`` are in each of ``states`` (per ``by`` too): rows of (*by, state,
    count), one query per state, each on its state's index."""
    return union_all(
        *(
            select(*by, literal_column(str(int(s))).label("state"), func.count())
            .select_from(table)
            .where(in_state(table.c.status, s))
            .group_by(*by)
            for s in states
        )
    )


def _state(state: int) -> dict[str, Any]:
    """The predicate of a partial index holding the rows in ``state``."""
    where = text(f"status = {int(state)}")
    return {"sqlite_where": where, "postgresql_where": where}


meta = Table(
    "numgate_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("integrator", Boolean, nullable=False, default=False),
    Column("number_check", Boolean, nullable=False, default=True),
    Column("whatsapp", Boolean, nullable=False, default=True),
    # a disabled account's keys are refused (NXCloud 1005, CAMS InvalidAccessKeyId.Inactive)
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("created_ms", BigInteger, nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("secret_enc", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    # JSON list of allowed core operation names (tenancy/operations.py); NULL = every operation
    Column("allowed_actions", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

apps = Table(
    "apps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("appkey", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("callback_url", Text, nullable=True),
    Column("secret_enc", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # deleted apps keep their row (batches refer to it) and their appkey stays taken
    Column("deleted_ms", BigInteger, nullable=True),
    # callbacks per POST (1: NXCloud's one per number; up to 1,000 as a JSON array)
    Column("callback_batch", Integer, nullable=False, default=1, server_default="1"),
    # how old a cached HLR / call result this app accepts, seconds (0: always live)
    Column("max_age_s", Integer, nullable=False, default=0, server_default="0"),
)

# scope: account_id 0 = every account; app_id 0 = every app of the account
prices = Table(
    "prices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False, default=0),
    Column("app_id", Integer, nullable=False, default=0),
    Column("country", String(2), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("price", BigInteger, nullable=False),
    # the price of a result served from the cache (None: the full price)
    Column("cached_price", BigInteger, nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
    UniqueConstraint("account_id", "app_id", "country", "level", name="uq_prices_scope"),
)

# append-only. kinds: topup (+), reserve (held for a batch), charge / release (settle a
# reservation). balance = Σtopup − Σcharge − open reservations, where
# open reservations = Σreserve − Σcharge − Σrelease.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("batch_id", BigInteger, nullable=True),
    Column("note", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_ledger_account_currency", "account_id", "currency"),
)

# each receiver of callbacks (scheme://host:port): callbacks are queued and paced per receiver.
# The pace columns are what a delivery worker last reported (``numgate deliveries receivers``)
callback_receivers = Table(
    "callback_receivers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("receiver", String(300), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("pace", Text, nullable=True),
    Column("pace_ms", BigInteger, nullable=True),
)

# each distinct callback URL, stored once (batches and deliveries refer to it)
callback_targets = Table(
    "callback_targets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # SHA-256 of the URL: a unique index on the URL itself would not fit long URLs on PostgreSQL
    Column("url_hash", String(64), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("receiver_id", BigInteger, ForeignKey("callback_receivers.id"), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# the spendable balance per account and currency: a projection of ledger_entries (Σtopup −
# Σreserve + Σrelease), kept in step in the same transaction as each entry, so that a
# reservation is one conditional UPDATE instead of a sum over the account's whole history. The
# ledger stays the record; `numgate admin balance show` reconciles the two.
balances = Table(
    "balances",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("available", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

batches = Table(
    "batches",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(32), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("app_id", Integer, ForeignKey("apps.id"), nullable=False),
    Column("batch_no", String(64), nullable=False),
    Column("check_level", SmallInteger, nullable=False),
    Column("country", String(2), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    # where its callbacks go (drUrl, else the app's callback URL); NULL: no callbacks
    Column("target_id", BigInteger, ForeignKey("callback_targets.id"), nullable=True),
    Column("total", Integer, nullable=False),
    # the cache price per number (None: a cached result costs unit_price) and the accepted age
    Column("cached_price", BigInteger, nullable=True),
    Column("max_age_s", Integer, nullable=False, default=0, server_default="0"),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_batches_account_batchno", "account_id", "batch_no"),
    Index("ix_batches_account_created", "account_id", "created_ms"),
)

# one row per submitted number. status: 0 pending, 1 leased, 2 done
checks = Table(
    "checks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # no foreign key on the columns of a row written per number (batch_id here, target_id in
    # deliveries): the parent is written first and never deleted, and the check cost PostgreSQL
    # a lookup and a key-share lock on the parent per row (migration 0008)
    Column("batch_id", BigInteger, nullable=False),
    Column("account_id", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    # the item as submitted (an over-long one fails alone with 114; the request body is bounded)
    Column("phone", Text, nullable=False),
    Column("message_id", String(40), nullable=False),
    Column("status", SmallInteger, nullable=False, default=0),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("lease_token", BigInteger, nullable=True),
    Column("attempts", SmallInteger, nullable=False, default=0),
    # core outcome (numgate.numbers.results.Outcome), NULL while not done
    Column("outcome", SmallInteger, nullable=True),
    Column("result", Text, nullable=True),
    Column("cost", BigInteger, nullable=True),
    Column("done_ms", BigInteger, nullable=True),
    # live levels: the next upstream of the route to try, where the result came from (an
    # upstream's name, "cache" or "simulator") and when it was observed; a number waiting for an
    # upstream's webhook (status 3) waits until due_ms
    Column("route_pos", SmallInteger, nullable=False, default=0, server_default="0"),
    Column("source", String(64), nullable=True),
    Column("observed_ms", BigInteger, nullable=True),
    Column("due_ms", BigInteger, nullable=True),
    Index("ix_checks_batch_seq", "batch_id", "seq"),
    Index("ix_checks_message_id", "message_id"),
    # by state (0 pending, 1 leased, 2 done, 3 waiting: numbers.service, numbers.live): claims
    # take pending numbers per account; a worker finds its leases by token; the pull feed reads an
    # account's results in the order they were finished; numbers waiting for an upstream's answer
    # are moved on by deadline
    Index("ix_checks_pending", "account_id", "id", **_state(0)),
    Index("ix_checks_leased", "lease_token", **_state(1)),
    Index("ix_checks_done", "account_id", "done_ms", "id", **_state(2)),
    Index("ix_checks_waiting", "due_ms", **_state(3)),
)

# Upstreams ------------------------------------------------------------------------------------
# The operator's accounts at HLR and test-call vendors. ``secret_enc`` is encrypted with the
# vault; ``unit_cost`` (ten-thousandths of ``cost_currency``) is what one call costs when the
# vendor's answer does not say; ``health`` is the last snapshot a worker saved.
upstreams = Table(
    "upstreams",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("base_url", Text, nullable=True),
    Column("key", Text, nullable=True),
    Column("secret_enc", Text, nullable=True),
    Column("from_number", String(32), nullable=True),
    # kind-specific settings (JSON): NXCloud's appkey …
    Column("options", Text, nullable=True),
    Column("unit_cost", BigInteger, nullable=False, default=0, server_default="0"),
    Column("cost_currency", String(3), nullable=False, default="USD", server_default="USD"),
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("health", Text, nullable=True),
    Column("health_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

# which upstreams serve a level in a country ('*': any country), in failover order
routes = Table(
    "routes",
    metadata,
    Column("level", SmallInteger, primary_key=True),
    Column("country", String(2), primary_key=True),
    Column("upstreams", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# the latest live result per number and level, for callers that accept an older fact
live_results = Table(
    "live_results",
    metadata,
    Column("e164", String(20), primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("result", Text, nullable=False),
    Column("source", String(64), nullable=False),
    Column("observed_ms", BigInteger, nullable=False),
)

# a number waiting for an upstream that answers later (a webhook): how its answer finds it
upstream_jobs = Table(
    "upstream_jobs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("check_id", BigInteger, nullable=False, unique=True),
    Column("upstream", String(64), nullable=False),
    # unguessable, in the inbound URL of vendors that sign nothing
    Column("token", String(64), nullable=False, unique=True),
    # the vendor's id for the job (a call SID, a message id)
    Column("vendor_ref", String(128), nullable=True, index=True),
    # what the vendor reported so far (JSON: events seen)
    Column("events", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

# each upstream call's cost to the operator, next to what the tenant was charged (checks.cost)
upstream_calls = Table(
    "upstream_calls",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("check_id", BigInteger, nullable=True),
    Column("upstream", String(64), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("country", String(2), nullable=True),
    # ok, no_information, failed
    Column("outcome", String(16), nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("latency_ms", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_upstream_calls_created", "created_ms"),
)

# callback outbox. status: 0 pending, 1 in flight (leased), 2 delivered, 3 failed
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("check_id", BigInteger, nullable=True, unique=True),
    Column("account_id", Integer, nullable=False),
    Column("app_id", Integer, nullable=False),
    # callback_targets.id (no foreign key: see checks.batch_id)
    Column("target_id", BigInteger, nullable=False),
    # the target's receiver, here too: callbacks are claimed per receiver
    Column("receiver_id", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("status", SmallInteger, nullable=False, default=0),
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("next_ms", BigInteger, nullable=False),
    Column("deadline_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=True),
    Column("lease_token", BigInteger, nullable=True),
    Column("last_status", SmallInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("last_latency_ms", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_deliveries_account", "account_id", "created_ms"),
    # by state (0 pending, 1 in flight, 2 delivered, 3 failed: delivery.outbox): callbacks due,
    # per receiver and overall; a worker's leases by token; failed ones per account and receiver
    Index("ix_deliveries_pending", "receiver_id", "next_ms", **_state(0)),
    Index("ix_deliveries_pending_due", "next_ms", **_state(0)),
    Index("ix_deliveries_leased", "lease_token", **_state(1)),
    Index("ix_deliveries_failed", "account_id", "receiver_id", **_state(3)),
)

# WhatsApp onboarding ---------------------------------------------------------------------------
# A WhatsApp Business phone number attached to one app (= CAMS space) of one account. ``phone``
# is the digits with country code; a number can be on one app only. ``registration`` is the
# core's word for the client/registration state (numgate.waba.model.Registration); ``status``,
# ``quality``, ``tier`` and ``name_status`` mirror what the upstream reports.
waba_numbers = Table(
    "waba_numbers",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("app_id", Integer, ForeignKey("apps.id"), nullable=False, index=True),
    Column("phone", String(32), nullable=False, unique=True),
    Column("cc", String(4), nullable=False),
    Column("verified_name", String(200), nullable=False),
    Column("upstream_id", String(64), nullable=True),
    Column("verified_ms", BigInteger, nullable=True),
    Column("registration", String(20), nullable=False),
    # an in-flight (de)registration holds the number until this time (a crash frees it)
    Column("busy_until_ms", BigInteger, nullable=True),
    Column("status", String(20), nullable=False),
    Column("quality", String(10), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("name_status", String(30), nullable=False),
    # the two-step verification PIN, encrypted with the vault; never returned
    Column("pin_enc", Text, nullable=True),
    Column("profile", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    postgresql_with=UPDATED_IN_PLACE,
)

# each verification-code request. state: sending, sent, failed, used
waba_code_requests = Table(
    "waba_code_requests",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("number_id", BigInteger, ForeignKey("waba_numbers.id"), nullable=False),
    Column("method", String(8), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("state", String(8), nullable=False),
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("requested_ms", BigInteger, nullable=False),
    Index("ix_waba_code_requests_number", "number_id", "requested_ms"),
    postgresql_with=UPDATED_IN_PLACE,
)

# each registration or deregistration attempt (the 72 h moving window counts these).
# outcome: pending, ok, failed
waba_register_events = Table(
    "waba_register_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("number_id", BigInteger, ForeignKey("waba_numbers.id"), nullable=False),
    Column("kind", String(12), nullable=False),
    Column("outcome", String(8), nullable=False),
    Column("detail", Text, nullable=True),
    Column("at_ms", BigInteger, nullable=False),
    Index("ix_waba_register_events_number", "number_id", "at_ms"),
)

# the sandbox simulator's own upstream state (what Meta would hold)
sandbox_phones = Table(
    "sandbox_phones",
    metadata,
    Column("id", String(20), primary_key=True),
    Column("phone", String(32), nullable=False, unique=True),
    Column("verified_name", String(200), nullable=False),
    Column("code", String(6), nullable=True),
    Column("verified", Boolean, nullable=False, default=False),
    # the two-step PIN as an argon2 hash (salted, slow): never stored in a recoverable form
    Column("pin_hash", Text, nullable=True),
    Column("registered", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
    postgresql_with=UPDATED_IN_PLACE,
)

# what the simulator "sent" instead of an SMS or a voice call
sandbox_outbox = Table(
    "sandbox_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("phone", String(32), nullable=False, index=True),
    Column("channel", String(8), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# replay memory when Redis is not configured: a signature (NXCloud) or nonce (CAMS) seen inside
# its window, so that a restart never opens a replay window. ``reply`` is the first request's
# answer (NULL while it runs); ``fingerprint`` is its method and path
replay_keys = Table(
    "replay_keys",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(300), nullable=False),
    Column("reply", LargeBinary, nullable=True),
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_replay_keys_expires", "expires_ms"),
    postgresql_with=UPDATED_IN_PLACE,
)

console_users = Table(
    "console_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),
    # argon2id (salted, slow); never the password itself
    Column("password_hash", String(200), nullable=False),
    # "operator" (everything) or "tenant" (only ``account_id``'s data)
    Column("role", String(16), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=True),
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_sign_in_ms", BigInteger, nullable=True),
)
