"""The bridge's tables and their migrations (namespace ``coding_agent_bridge``)."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "coding_agent_bridge"
metadata = sa.MetaData()

sessions = sa.Table(
    "bridge_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("workspace", sa.String(1000), nullable=False),
    # The ACP agent the gateway runs for it (``[agents.<id>]``) and that agent's session
    # (the agents plugin's id); NULL for an agent that runs elsewhere and reports in.
    sa.Column("agent", sa.String(100), nullable=True),
    sa.Column("agent_session_id", sa.String(64), nullable=True),
    sa.Column("state", sa.String(20), nullable=False, index=True),  # open, closed, expired
    sa.Column("owner", sa.String(300), nullable=True, index=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("closed_ms", sa.BigInteger, nullable=True),
    sa.Column("close_reason", sa.Text, nullable=True),
    # /gateway/jobs pages sessions newest first by this key.
    sa.Index("bridge_sessions_created", "created_ms", "id"),
)

followups = sa.Table(
    "bridge_followups",
    metadata,
    # ``n`` orders the queue: drained oldest first.
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("session_id", sa.String(64), nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),  # queued, drained
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("drained_ms", sa.BigInteger, nullable=True),
    sa.Column("drained_by", sa.String(200), nullable=True),  # a principal, or agent:<id>
)


def _by_created(conn: sa.Connection) -> None:
    for index in sessions.indexes:
        if index.name == "bridge_sessions_created":
            index.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(
        NAMESPACE, 1, "bridge sessions and their queued follow-ups", [sessions, followups]
    ),
    Migration(NAMESPACE, 2, "bridge sessions in creation order (the jobs view)", _by_created),
)
