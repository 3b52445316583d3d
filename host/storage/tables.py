"""The host's own tables. Plugins define theirs beside their code and migrate them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("namespace", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_ms", sa.BigInteger, nullable=False),
)

kv = sa.Table(
    "gateway_kv",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)

events = sa.Table(
    "gateway_events",
    metadata,
    sa.Column("stream", sa.String(300), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)

# Highest seq per stream: allocating the next seq is one row update in the writer's
# transaction, and the global position lets other processes' tails find new events.
event_streams = sa.Table(
    "gateway_event_streams",
    metadata,
    sa.Column("stream", sa.String(300), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)

leases = sa.Table(
    "gateway_leases",
    metadata,
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
)

# Once-only keys: a schedule tick, a webhook delivery, an idempotency key. Inserting an
# existing (scope, key) does nothing, so any number of processes can race on it.
once_keys = sa.Table(
    "gateway_once_keys",
    metadata,
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
)

auth_sessions = sa.Table(
    "gateway_auth_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(200), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    sa.Column("client", sa.String(200), nullable=True),
    # HMAC (keyed by the session token) of the account's credential at issue time.
    sa.Column("credential_fp", sa.String(64), nullable=True),
)

# Token buckets of the rate limits when they are shared by several processes (see
# host.auth.shared_limits). A row whose bucket is full again (``full_ms`` passed) means
# the same as no row, so retention deletes it without changing any limit.
rate_buckets = sa.Table(
    "gateway_rate_buckets",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("stamp_ms", sa.BigInteger, nullable=False),
    sa.Column("full_ms", sa.BigInteger, nullable=False),
    # Whether the last take got a token: the upsert decides it, RETURNING tells it.
    sa.Column("granted", sa.Integer, nullable=False),
)

# Failed password logins per (account, address) and per account (host.auth.backoff).
login_failures = sa.Table(
    "gateway_login_failures",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("last_ms", sa.BigInteger, nullable=False),
)
