"""The few places where SQLite and PostgreSQL differ, behind one small strategy."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


class Dialect:
    name = "generic"

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_update/nothing``."""
        raise NotImplementedError

    def insert_ignore(self, table: sa.Table) -> Any:
        return self.insert(table).on_conflict_do_nothing()

    def upsert(self, table: sa.Table, keys: list[str], values: dict[str, Any]) -> Any:
        """INSERT ``values``; on a conflict over ``keys`` update the other columns."""
        stmt = self.insert(table).values(**values)
        updates = {k: v for k, v in values.items() if k not in keys}
        return stmt.on_conflict_do_update(index_elements=keys, set_=updates)

    def claim(self, select: sa.Select[Any]) -> sa.Select[Any]:
        """A SELECT that takes rows for this transaction alone."""
        return select


class SQLiteDialect(Dialect):
    """Claims rely on ``BEGIN IMMEDIATE``: one writer at a time for the whole file."""

    name = "sqlite"

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)


class PostgresDialect(Dialect):
    name = "postgresql"

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def claim(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.with_for_update(skip_locked=True)


def for_url(url: str) -> Dialect:
    if url.startswith("sqlite"):
        return SQLiteDialect()
    if url.startswith("postgresql"):
        return PostgresDialect()
    raise ValueError(f"unsupported storage URL scheme: {url.split(':', 1)[0]}")
