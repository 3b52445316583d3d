"""Aggregates over the runs a reader may read, computed in SQL (for dashboards): counts
by status, and per time bucket the runs created, started, completed and failed in it and
those running at its end. A few GROUP BY queries whatever the number of runs, instead of
paging every run record to the caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Principal, owned_by
from plugins.pipelines.gates import GATE_READ_ALL
from plugins.pipelines.tables import runs


@dataclass(frozen=True)
class RunCounts:
    """Runs by status; ``first_finished_ms``: per status, the earliest ``finished_ms``."""

    by_status: dict[str, int] = field(default_factory=dict)
    first_finished_ms: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


async def counts(
    conn: AsyncConnection, reader: Principal, finished_since_ms: int | None = None
) -> RunCounts:
    """Every readable run by status; with ``finished_since_ms``, only the runs that
    finished at or after it."""
    stmt = (
        sa.select(runs.c.status, sa.func.count(), sa.func.min(runs.c.finished_ms))
        .where(owned_by(runs.c.owner, reader, GATE_READ_ALL))
        .group_by(runs.c.status)
    )
    if finished_since_ms is not None:
        stmt = stmt.where(runs.c.finished_ms >= finished_since_ms)
    by_status: dict[str, int] = {}
    first: dict[str, int] = {}
    for status, n, earliest in (await conn.execute(stmt)).all():
        by_status[status] = int(n)
        if earliest is not None:
            first[status] = int(earliest)
    return RunCounts(by_status, first)


def _bucket(column: Any, start_ms: int, width: int) -> Any:
    # Floor division of integers (``/`` on both stores; operands are never negative).
    return (column - start_ms) // width


async def timeline(
    conn: AsyncConnection, reader: Principal, start_ms: int, end_ms: int, buckets: int
) -> dict[str, Any]:
    """``buckets`` equal buckets from ``start_ms``: per bucket ``queued`` (created in it),
    ``started``, ``completed`` and ``failed`` (finished in it), and ``running`` (started
    before its end and not finished by then)."""
    width = max(1, (end_ms - start_ms) // buckets)
    end = start_ms + width * buckets
    rows = [
        {
            "start_ms": start_ms + i * width,
            "end_ms": start_ms + (i + 1) * width,
            "queued": 0,
            "started": 0,
            "completed": 0,
            "failed": 0,
            "running": 0,
        }
        for i in range(buckets)
    ]
    readable = owned_by(runs.c.owner, reader, GATE_READ_ALL)

    async def grouped(column: Any, *extra: Any, where: Any = None) -> list[Any]:
        b = _bucket(column, start_ms, width).label("b")
        stmt = (
            sa.select(b, *extra, sa.func.count())
            .where(readable, column >= start_ms, column < end)
            .group_by(b, *extra)
        )
        if where is not None:
            stmt = stmt.where(where)
        return list((await conn.execute(stmt)).all())

    for b, n in await grouped(runs.c.created_ms):
        rows[int(b)]["queued"] = int(n)
    started_in = [0] * buckets
    for b, n in await grouped(runs.c.started_ms):
        rows[int(b)]["started"] = started_in[int(b)] = int(n)
    for b, status, n in await grouped(runs.c.finished_ms, runs.c.status):
        if status in ("completed", "failed"):
            rows[int(b)][status] += int(n)
    # Runs that had started, per bucket they finished in: what leaves "running" there.
    ended_in = [0] * buckets
    for b, n in await grouped(runs.c.finished_ms, where=runs.c.started_ms.is_not(None)):
        ended_in[int(b)] = int(n)

    def tally(condition: Any) -> Any:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    before = sa.select(
        tally(runs.c.started_ms < start_ms),
        tally(sa.and_(runs.c.started_ms.is_not(None), runs.c.finished_ms < start_ms)),
    ).where(readable)
    began, ended = (await conn.execute(before)).one()
    running = int(began or 0) - int(ended or 0)
    for i, row in enumerate(rows):
        running += started_in[i] - ended_in[i]
        row["running"] = running
    return {"start_ms": start_ms, "end_ms": end, "bucket_ms": width, "buckets": rows}
