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
