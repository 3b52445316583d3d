"""The plugin's own table and the migration that creates it.

A plugin never touches the host's tables: it defines its own (prefixed with its name,
so they cannot clash with another plugin's) and contributes a versioned migration under
its own namespace. The host applies pending migrations at start, once per state
directory, under the store's migration lock. To change the schema later, append a
``Migration(NAMESPACE, 2, ...)``; never edit one that has shipped.
"""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "hello"

metadata = sa.MetaData()

guest_book = sa.Table(
    "hello_guest_book",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("signed_by", sa.String(200), nullable=False),
    sa.Column("signed_ms", sa.BigInteger, nullable=False),
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration.create_tables(NAMESPACE, 1, "guest book", [guest_book]),
)
