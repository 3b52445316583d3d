"""The cortex plugin's table and its migration (namespace ``cortex``): one row per chat,
for ``GET /cortex/status``'s last use (shared by replicas)."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "cortex"
metadata = sa.MetaData()

chats = sa.Table(
    "cortex_chats",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(40), nullable=False, unique=True),
    sa.Column("owner", sa.String(300), nullable=True, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    # done | error | cancelled
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("error_code", sa.String(100), nullable=True),
    sa.Column("tool_calls", sa.Integer, nullable=False, default=0),
    sa.Column("started_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_ms", sa.BigInteger, nullable=False, index=True),
)

MIGRATIONS = (Migration.create_tables(NAMESPACE, 1, "chats", [chats]),)
