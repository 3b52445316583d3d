"""The agents plugin's tables and their migration (namespace ``agents``)."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "agents"
metadata = sa.MetaData()

sessions = sa.Table(
    "agents_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(100), nullable=False, index=True),
    # The agent's own id of the session (ACP ``sessionId``): what ``session/load`` takes.
    sa.Column("acp_session_id", sa.String(200), nullable=True),
    sa.Column("workspace", sa.String(2000), nullable=False),
    # active (a prompt runs), idle, closed, expired
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("owner", sa.String(300), nullable=True, index=True),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("run_id", sa.String(64), nullable=True),  # a pipeline run's agent step
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=False),
    sa.Column("closed_ms", sa.BigInteger, nullable=True),
    sa.Column("close_reason", sa.Text, nullable=True),
    # /gateway/jobs pages sessions newest first by this key.
    sa.Index("agents_sessions_created", "created_ms", "id"),
)


def _by_created(conn: sa.Connection) -> None:
    for index in sessions.indexes:
        if index.name == "agents_sessions_created":
            index.create(conn, checkfirst=True)


MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(NAMESPACE, 1, "agent (ACP) sessions", [sessions]),
    Migration(NAMESPACE, 2, "agent sessions in creation order (the jobs view)", _by_created),
)
