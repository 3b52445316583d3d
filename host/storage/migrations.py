"""Versioned migrations, contributed per namespace by the host and by plugins."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from host.storage import tables
from host.storage.notify import create_notify_trigger

MigrationStep = Callable[[sa.Connection], None]


@dataclass(frozen=True)
class Migration:
    """One schema change. ``upgrade`` gets a synchronous SQLAlchemy connection inside the
    migration transaction; use Core DDL (``table.create(conn)``) so it runs on every
    dialect. Versions start at 1 and only ever grow."""

    namespace: str
    version: int
    name: str
    upgrade: MigrationStep

    @classmethod
    def create_tables(
        cls, namespace: str, version: int, name: str, table_list: Sequence[sa.Table]
    ) -> Migration:
        def upgrade(conn: sa.Connection) -> None:
            # One look at the catalogue rather than one (two on SQLite) per table.
            present = set(sa.inspect(conn).get_table_names())
            for table in table_list:
                if table.name not in present:
                    table.create(conn)

        return cls(namespace, version, name, upgrade)

    @staticmethod
    def ensure_column(conn: sa.Connection, column: sa.Column[object]) -> None:
        """Add ``column`` (of a table object) to its table in the store unless it is there.
        For a column added to a table after its creating migration, which builds the table
        from the current object: a new store has it already, an older one gets it."""
        table = column.table
        present = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
        if column.name not in present:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


HOST_MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(
        "host",
        1,
        "kv, events, leases, once keys, auth sessions",
        [
            tables.kv,
            tables.events,
            tables.event_streams,
            tables.leases,
            tables.once_keys,
            tables.auth_sessions,
        ],
    ),
    Migration(
        "host",
        2,
        "auth sessions: credential fingerprint",
        lambda conn: Migration.ensure_column(conn, tables.auth_sessions.c.credential_fp),
    ),
    Migration("host", 3, "events: notify listeners (PostgreSQL)", create_notify_trigger),
    Migration.create_tables(
        "host",
        4,
        "shared rate limits and login back-off",
        [tables.rate_buckets, tables.login_failures],
    ),
)


def pending(applied: set[tuple[str, int]], migrations: Sequence[Migration]) -> list[Migration]:
    todo = [m for m in migrations if (m.namespace, m.version) not in applied]
    return sorted(todo, key=lambda m: (m.namespace != "host", m.namespace, m.version))
