"""Reading the log: filtered pages (newest first), summaries and exports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa

from host.api import Store
from plugins.audit.chain import from_row
from plugins.audit.contract import AuditRecord
from plugins.audit.models import AuditFilter
from plugins.audit.tables import records

EXPORT_BATCH = 1000
SUMMARY_KEYS_MAX = 1000  # per dimension: the most frequent


def where(f: AuditFilter) -> list[sa.ColumnElement[bool]]:
    t = records
    clauses: list[sa.ColumnElement[bool]] = []
    for name in ("source", "action", "actor", "reason_code", "outcome"):
        value = getattr(f, name, None)
        if value is not None:
            clauses.append(t.c[name] == value)
    if f.since_ms is not None:
        clauses.append(t.c.ts_ms >= f.since_ms)
    if f.until_ms is not None:
        clauses.append(t.c.ts_ms < f.until_ms)
    return clauses


async def page(
    store: Store, f: AuditFilter, limit: int, cursor: int | None
) -> tuple[list[AuditRecord], int | None]:
    """Newest first; ``cursor`` is the seq the previous page stopped before."""
    clauses = where(f)
    if cursor is not None:
        clauses.append(records.c.seq < cursor)
    stmt = sa.select(records).where(*clauses).order_by(records.c.seq.desc()).limit(limit + 1)
    async with store.read() as conn:
        found = [from_row(r) for r in await conn.execute(stmt)]
    more = len(found) > limit
    found = found[:limit]
    return found, (found[-1].seq if more and found else None)


async def summary(store: Store, since_ms: int | None, until_ms: int | None) -> dict[str, Any]:
    window = AuditFilter(since_ms=since_ms, until_ms=until_ms)
    clauses = where(window)
    t = records
    out: dict[str, Any] = {"since_ms": since_ms, "until_ms": until_ms}
    async with store.read() as conn:
        total = await conn.execute(sa.select(sa.func.count()).select_from(t).where(*clauses))
        out["total"] = int(total.scalar_one())
        for name in ("source", "action", "actor", "reason_code", "outcome"):
            column = t.c[name]
            n = sa.func.count().label("n")
            stmt = sa.select(column, n).where(*clauses).group_by(column)
            if name == "reason_code":
                stmt = stmt.where(column.is_not(None))
            stmt = stmt.order_by(n.desc(), column).limit(SUMMARY_KEYS_MAX)
            out[f"by_{name}"] = {
                (key if key is not None else "-"): int(count)
                for key, count in await conn.execute(stmt)
            }
    return out


async def export(store: Store, f: AuditFilter) -> AsyncIterator[AuditRecord]:
    """Every matching record, oldest first, read in batches."""
    after = 0
    while True:
        stmt = (
            sa.select(records)
            .where(*where(f), records.c.seq > after)
            .order_by(records.c.seq)
            .limit(EXPORT_BATCH)
        )
        async with store.read() as conn:
            batch = [from_row(r) for r in await conn.execute(stmt)]
        for record in batch:
            yield record
        if len(batch) < EXPORT_BATCH:
            return
        after = batch[-1].seq
