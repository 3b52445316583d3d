"""Tool call statistics, kept across restarts: per tool the calls, errors and a latency
histogram (log-spaced buckets, each 20 % wider than the last), from which p50 and p95
are read (the upper bound of the bucket holding the rank: within 20 %).

Calls are counted in memory and written in batches (every ``flush_seconds`` and at
shutdown) as increments, so any number of workers and replicas add to the same rows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from host.api import Migration, Store, ToolCall

log = logging.getLogger("gateway.tools")

NAMESPACE = "tools"
metadata = sa.MetaData()

calls_table = sa.Table(
    "tools_calls",
    metadata,
    sa.Column("tool", sa.String(200), primary_key=True),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("total_ms", sa.Float, nullable=False),
    sa.Column("last_call_ms", sa.BigInteger, nullable=True),
    sa.Column("last_error", sa.String(100), nullable=True),
)
latency_table = sa.Table(
    "tools_latency",
    metadata,
    sa.Column("tool", sa.String(200), primary_key=True),
    sa.Column("bucket", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
MIGRATIONS = (
    Migration.create_tables(
        NAMESPACE, 1, "tool call counts and latency histograms", [calls_table, latency_table]
    ),
)

FLOOR_MS = 0.01
GROWTH = 1.2
BUCKETS = 100  # the last holds everything from 0.01 * 1.2**99 ms (~69 s) up


def bucket_of(ms: float) -> int:
    if ms <= FLOOR_MS:
        return 0
    return min(BUCKETS - 1, math.ceil(math.log(ms / FLOOR_MS, GROWTH)))


def upper_ms(bucket: int) -> float:
    return float(FLOOR_MS * GROWTH**bucket)


def percentile(histogram: dict[int, int], q: float) -> float | None:
    total = sum(histogram.values())
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return round(upper_ms(bucket), 3)
    return None  # not reached: the counts add up to total


@dataclass
class Tally:
    calls: int = 0
    errors: int = 0
    total_ms: float = 0.0
    last_call_ms: int | None = None
    last_error: str | None = None
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, call: ToolCall) -> None:
        self.calls += 1
        self.total_ms += call.duration_ms
        self.last_call_ms = max(self.last_call_ms or 0, call.started_ms)
        if not call.ok:
            self.errors += 1
            self.last_error = call.error
        bucket = bucket_of(call.duration_ms)
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1

    def merge(self, other: Tally) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.total_ms += other.total_ms
        if other.last_call_ms is not None:
            self.last_call_ms = max(self.last_call_ms or 0, other.last_call_ms)
        self.last_error = other.last_error or self.last_error
        for bucket, count in other.histogram.items():
            self.histogram[bucket] = self.histogram.get(bucket, 0) + count


class StatsRecorder:
    """Counts calls in memory; :meth:`flush` adds them to the store."""

    def __init__(self, store: Store, flush_seconds: float) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.pending: dict[str, Tally] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, call: ToolCall) -> None:
        self.pending.setdefault(call.tool, Tally()).add(call)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:  # the store is away: the counts stay pending for the next try
                log.exception("writing tool call statistics failed")

    async def flush(self) -> None:
        async with self._lock:
            batch, self.pending = self.pending, {}
            if not batch:
                return
            try:
                await self._write(batch)
            except BaseException:
                for tool, tally in batch.items():  # kept for the next flush
                    self.pending.setdefault(tool, Tally()).merge(tally)
                raise

    async def _write(self, batch: dict[str, Tally]) -> None:
        insert = self.store.dialect.insert
        async with self.store.write() as conn:
            for tool, tally in sorted(batch.items()):
                stmt = insert(calls_table).values(
                    tool=tool,
                    calls=tally.calls,
                    errors=tally.errors,
                    total_ms=tally.total_ms,
                    last_call_ms=tally.last_call_ms,
                    last_error=tally.last_error,
                )
                ex = stmt.excluded
                last_error = sa.func.coalesce(ex.last_error, calls_table.c.last_error)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["tool"],
                        set_={
                            "calls": calls_table.c.calls + ex.calls,
                            "errors": calls_table.c.errors + ex.errors,
                            "total_ms": calls_table.c.total_ms + ex.total_ms,
                            "last_call_ms": ex.last_call_ms,
                            "last_error": last_error,
                        },
                    )
                )
                for bucket, count in sorted(tally.histogram.items()):
                    hist = insert(latency_table).values(tool=tool, bucket=bucket, count=count)
                    await conn.execute(
                        hist.on_conflict_do_update(
                            index_elements=["tool", "bucket"],
                            set_={"count": latency_table.c.count + hist.excluded.count},
                        )
                    )

    async def totals(self, tools: Iterable[str]) -> dict[str, Tally]:
        """Stored and pending counts of every tool in ``tools`` and every tool stored.
        Not while a flush writes: its batch is then neither pending nor stored yet."""
        async with self._lock:
            return await self._totals(tools)

    async def _totals(self, tools: Iterable[str]) -> dict[str, Tally]:
        found: dict[str, Tally] = {name: Tally() for name in tools}
        async with self.store.read() as conn:
            for row in (await conn.execute(sa.select(calls_table))).all():
                tally = found.setdefault(row.tool, Tally())
                tally.calls, tally.errors, tally.total_ms = row.calls, row.errors, row.total_ms
                tally.last_call_ms, tally.last_error = row.last_call_ms, row.last_error
            for row in (await conn.execute(sa.select(latency_table))).all():
                found.setdefault(row.tool, Tally()).histogram[row.bucket] = row._mapping["count"]
        for tool, tally in self.pending.items():
            found.setdefault(tool, Tally()).merge(tally)
        return found


def record_of(name: str, tally: Tally, registered: bool) -> dict[str, Any]:
    return {
        "name": name,
        "registered": registered,
        "calls": tally.calls,
        "errors": tally.errors,
        "error_rate": round(tally.errors / tally.calls, 4) if tally.calls else 0.0,
        "mean_ms": round(tally.total_ms / tally.calls, 3) if tally.calls else None,
        "p50_ms": percentile(tally.histogram, 0.5),
        "p95_ms": percentile(tally.histogram, 0.95),
        "last_call_ms": tally.last_call_ms,
        "last_error": tally.last_error,
    }
