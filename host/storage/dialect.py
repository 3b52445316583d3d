"""The few places where SQLite and PostgreSQL differ, behind one small strategy.

Write transactions: on SQLite ``BEGIN IMMEDIATE`` takes the one write lock of the file
at the transaction's start, so a read-then-write is safe across processes. On
PostgreSQL a write transaction is an ordinary one (READ COMMITTED); what must not race
takes a row lock (:meth:`Dialect.lock`, ``FOR UPDATE``), skips rows another transaction
holds (:meth:`Dialect.claim`, ``FOR UPDATE SKIP LOCKED``), is one statement that decides
atomically (``INSERT ... ON CONFLICT``), or holds a transaction-scoped advisory lock
(:meth:`Dialect.serialize`, ``pg_advisory_xact_lock``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


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
        """A SELECT that takes rows for this transaction alone, passing over the rows
        another transaction holds (a queue: each row goes to one claimant)."""
        return select

    def lock(self, select: sa.Select[Any]) -> sa.Select[Any]:
        """A SELECT whose rows no other transaction may change until this one ends (it
        waits for them if another holds them)."""
        return select

    def json_increment(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """``column`` (a JSON number) plus one, as a JSON value."""
        raise NotImplementedError

    def floor(self, value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """The integer part of a non-negative number, as an integer."""
        return sa.func.floor(value)

    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        """Hold a lock named ``name`` until ``conn``'s transaction ends: transactions
        that serialize on one name run one at a time, in any number of processes."""


class SQLiteDialect(Dialect):
    """Every write transaction is ``BEGIN IMMEDIATE``: one writer at a time for the
    whole file, so claims, locks and named locks are already serialised."""

    name = "sqlite"

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def json_increment(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(column, sa.Integer) + 1

    def floor(self, value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # CAST truncates toward zero (floor() needs SQLite's optional math functions).
        return sa.cast(value, sa.Integer)


class PostgresDialect(Dialect):
    name = "postgresql"

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def claim(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.with_for_update(skip_locked=True)

    def lock(self, select: sa.Select[Any]) -> sa.Select[Any]:
        return select.with_for_update()

    def json_increment(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        number = sa.cast(sa.cast(column, sa.Text), sa.BigInteger) + 1
        return sa.func.to_json(number)

    def floor(self, value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.cast(sa.func.floor(value), sa.BigInteger)

    async def serialize(self, conn: AsyncConnection, name: str) -> None:
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(advisory_key(name))))


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks are keyed by bigint)."""
    digest = hashlib.sha256(f"agent-gateway:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def for_url(url: str) -> Dialect:
    if url.startswith("sqlite"):
        return SQLiteDialect()
    if url.startswith("postgresql"):
        return PostgresDialect()
    raise ValueError(f"unsupported storage URL scheme: {url.split(':', 1)[0]}")
