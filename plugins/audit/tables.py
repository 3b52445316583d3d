"""The audit plugin's tables and their migration (namespace ``audit``).

``audit_records`` is the hash chain: ``seq`` counts from 1 with no gaps (a gap is a
removed record), each row holds the hash of the one before (``prev_hash``) and its own
(``hash``, over its content and ``prev_hash``). ``audit_head`` is one row, the last
record's ``seq`` and ``hash``: appends read and move it under a named lock, and
``verify`` compares it with the last record, so removing the newest records shows too.
"""

from __future__ import annotations

import sqlalchemy as sa

from host.api import Migration

NAMESPACE = "audit"
GENESIS = "0" * 64  # the prev_hash of record 1
metadata = sa.MetaData()

records = sa.Table(
    "audit_records",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("source", sa.String(32), nullable=False, index=True),
    sa.Column("action", sa.String(200), nullable=False, index=True),
    sa.Column("actor", sa.String(300), nullable=True, index=True),
    sa.Column("target", sa.String(300), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("reason_code", sa.String(200), nullable=True, index=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("client", sa.String(100), nullable=True),
    sa.Column("method", sa.String(16), nullable=True),
    sa.Column("route", sa.String(300), nullable=True),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)
HEAD_ID = 1


def _create(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=[records, head], checkfirst=True)
    present = conn.execute(sa.select(head.c.id).where(head.c.id == HEAD_ID)).first()
    if present is None:
        conn.execute(head.insert().values(id=HEAD_ID, seq=0, hash=GENESIS, updated_ms=0))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(NAMESPACE, 1, "audit records (hash chain) and their head", _create),
)
