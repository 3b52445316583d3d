"""The deploy plugin's tables: agents (live version, stopped or live), their versions,
and every switch (deploy, rollback, stop) in order."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "deploy"
metadata = sa.MetaData()

agents = sa.Table(
    "deploy_agents",
    metadata,
    sa.Column("agent_id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("live_version", sa.String(100), nullable=True),  # none: stopped, never deployed
    sa.Column("live_spec", sa.JSON, nullable=True),  # the live version's, read on admission
    sa.Column("state", sa.String(20), nullable=False),  # live | stopped
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
)
versions = sa.Table(
    "deploy_versions",
    metadata,
    sa.Column("agent_id", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=True),
)
switches = sa.Table(
    "deploy_switches",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(200), nullable=False, index=True),
    sa.Column("action", sa.String(20), nullable=False),  # deploy | rollback | stop
    sa.Column("from_version", sa.String(100), nullable=True),
    sa.Column("to_version", sa.String(100), nullable=True),
    sa.Column("by", sa.String(200), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
)
MIGRATIONS = (
    Migration.create_tables(
        NAMESPACE, 1, "agents, their versions and switches", [agents, versions, switches]
    ),
)
