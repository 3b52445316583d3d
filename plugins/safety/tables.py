"""The safety plugin's table and its migration (namespace ``safety``): one row for the
policy and one for the API-managed rules, each with a version every write increments,
which is what other replicas compare to notice a change."""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "safety"
metadata = sa.MetaData()

state = sa.Table(
    "safety_state",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),  # "policy" or "rules"
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=True),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(NAMESPACE, 1, "the safety policy and API-managed rules", [state]),
)
