"""Token buckets in the store, shared by every process on it (replicas on one PostgreSQL,
the workers of ``gateway serve --workers N``).

One take is one statement: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``. The row
is locked by the upsert (PostgreSQL) or the file by the write transaction (SQLite), so
takes on one key are serialised in every process: the limit is exact across processes,
never exceeded. The bucket refills from the time of the last take as stored, by the
clock of the process that takes; replicas with skewed clocks cannot refill a bucket
backwards (the stored time never goes back) and a clock ahead by ``d`` seconds lends a
bucket at most ``d * per_minute / 60`` tokens early. Writes do not wait for the disk
(:meth:`Store.volatile_write`): a crash may hand back the tokens of its last moment.

A row whose bucket is full again means the same as no row; retention deletes those
(:func:`prune_rate_buckets`).
"""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa

from host.settings import RateLimit
from host.storage import Store, now_ms
from host.storage.tables import rate_buckets


def _least(a: Any, b: Any) -> Any:
    return sa.case((a < b, a), else_=b)


class StoreRateLimiter:
    """:class:`host.auth.ratelimit.RateLimiter`'s buckets, kept in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def hit(self, key: str, limit: RateLimit) -> int:
        """Count a request; returns 0 when allowed, else Retry-After seconds (>= 1)."""
        granted, tokens = await self.take(key, limit)
        if granted:
            return 0
        wait = (1.0 - tokens) * 60.0 / limit.per_minute
        return max(1, math.ceil(wait))

    async def take(self, key: str, limit: RateLimit) -> tuple[bool, float]:
        """Take one token from ``key``'s bucket: (whether one was taken, tokens left)."""
        t = rate_buckets
        now = now_ms()
        capacity = float(limit.capacity)
        per_ms = limit.per_minute / 60_000.0
        cap = sa.literal(capacity, sa.Float)
        rate = sa.literal(per_ms, sa.Float)
        now_lit = sa.literal(now, sa.BigInteger)
        elapsed = sa.case((now_lit > t.c.stamp_ms, now_lit - t.c.stamp_ms), else_=0)
        available = _least(t.c.tokens + elapsed * rate, cap)
        ok = available >= 1.0
        left = sa.case((ok, available - 1.0), else_=available)
        stmt = (
            self.store.dialect.insert(t)
            .values(
                key=key,
                tokens=capacity - 1.0,
                stamp_ms=now,
                full_ms=now + math.ceil(1.0 / per_ms),
                granted=1,
            )
            .on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "tokens": left,
                    "stamp_ms": sa.case((now_lit > t.c.stamp_ms, now_lit), else_=t.c.stamp_ms),
                    "full_ms": now_lit + sa.cast((cap - left) / rate, sa.BigInteger) + 1,
                    "granted": sa.case((ok, 1), else_=0),
                },
            )
            .returning(t.c.granted, t.c.tokens)
        )
        async with self.store.volatile_write() as conn:
            row = (await conn.execute(stmt)).one()
        return bool(row.granted), float(row.tokens)


async def prune_rate_buckets(store: Store, now: int, batch_size: int, dry_run: bool = False) -> int:
    """Delete the buckets that are full again by ``now`` (as good as absent)."""
    t = rate_buckets
    where = t.c.full_ms < now
    if dry_run:
        return await store.count_where(t, where)
    return await store.delete_batched(t, where, [t.c.key], batch_size)
