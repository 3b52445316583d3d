"""The dashboard's tables (namespace ``dashboard``): alert acknowledgements, the
sign-ins of the pages made with a gateway token (a password sign-in is a host auth
session: it lives and dies with it), and the alerts' signal counts."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "dashboard"
metadata = sa.MetaData()

alert_acks = sa.Table(
    "dashboard_alert_acks",
    metadata,
    # An alert's id and the start of its occurrence: a new occurrence alerts again.
    sa.Column("alert_id", sa.String(300), primary_key=True),
    sa.Column("since_ms", sa.BigInteger, primary_key=True),
    sa.Column("owner", sa.String(300), nullable=False),
    sa.Column("acked_by", sa.String(300), nullable=False),
    sa.Column("acked_ms", sa.BigInteger, nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)

logins = sa.Table(
    "dashboard_logins",
    metadata,
    sa.Column("sid_hash", sa.String(64), primary_key=True),
    # The token_hash of the gateway token signed in with: the principal is looked up
    # again on every request, so a token removed from the config signs the cookie out.
    sa.Column("token_digest", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False, index=True),
)

# What the alerts count, summed over every replica (signals.py): per kind and bucket.
signals = sa.Table(
    "dashboard_signals",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("bucket_ms", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("first_ms", sa.BigInteger, nullable=False),
)

MIGRATIONS = [
    Migration.create_tables(NAMESPACE, 1, "alert acks and logins", [alert_acks, logins]),
    Migration.create_tables(NAMESPACE, 2, "alert signals shared by replicas", [signals]),
]
