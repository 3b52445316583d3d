"""Token buckets in the store, shared by every process on it (replicas on one PostgreSQL,
the workers of ``gateway serve --workers N``).

A take is one statement: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, which
refills the bucket, takes what it holds up to what is asked, and says how many it took.
The row is locked by the upsert (PostgreSQL) or the file by the write transaction
(SQLite), so takes on one key are serialised in every process: the limit is exact
across processes, never exceeded.

Within a process, the requests of one key that arrive while its statement is in flight
wait for it and then go together in the next one, which asks for as many tokens as they
are (the first ``granted`` of them pass, in arrival order): one statement in flight per
key and process, however many requests, so a busy principal costs the database one
round trip per batch, not per request.

The bucket refills from the time of the last take as stored, by the clock of the
process that takes; the stored time never goes back, and a clock ahead by ``d``
seconds lends a bucket at most ``d * per_minute / 60`` tokens early. Writes do not wait
for the disk (:meth:`Store.execute_volatile`): a crash may hand back the tokens of its
last moment. A row whose bucket is full again means the same as no row; retention
deletes those (:func:`prune_rate_buckets`).
"""

from __future__ import annotations

import asyncio
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
        # Per key: the requests waiting for the next statement (present while one runs).
        self._waiting: dict[str, list[asyncio.Future[int]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def hit(self, key: str, limit: RateLimit) -> int:
        """Count a request; returns 0 when allowed, else Retry-After seconds (>= 1)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(future)
        else:
            self._waiting[key] = [future]
            # A task of its own: a caller that goes away must not strand the others.
            task = asyncio.create_task(self._flush(key, limit))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        return await future

    async def _flush(self, key: str, limit: RateLimit) -> None:
        waiting = self._waiting[key]
        try:
            while waiting:
                batch = waiting[:]
                waiting.clear()
                try:
                    granted, tokens = await self.take(key, limit, len(batch))
                except Exception as exc:
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                wait = max(1, math.ceil((1.0 - tokens) * 60.0 / limit.per_minute))
                for i, future in enumerate(batch):
                    if not future.done():
                        future.set_result(0 if i < granted else wait)
        finally:
            del self._waiting[key]

    async def take(self, key: str, limit: RateLimit, want: int = 1) -> tuple[int, float]:
        """Take up to ``want`` tokens from ``key``'s bucket: (how many were taken, tokens
        left)."""
        t = rate_buckets
        now = now_ms()
        capacity = float(limit.capacity)
        per_ms = limit.per_minute / 60_000.0
        cap = sa.literal(capacity, sa.Float)
        rate = sa.literal(per_ms, sa.Float)
        asked = sa.literal(want, sa.Integer)
        now_lit = sa.literal(now, sa.BigInteger)
        elapsed = sa.case((now_lit > t.c.stamp_ms, now_lit - t.c.stamp_ms), else_=0)
        available = _least(t.c.tokens + elapsed * rate, cap)
        granted = sa.case((available >= asked, asked), else_=self.store.dialect.floor(available))
        left = available - granted
        first = min(want, int(capacity))
        stmt = (
            self.store.dialect.insert(t)
            .values(
                key=key,
                tokens=capacity - first,
                stamp_ms=now,
                full_ms=now + math.ceil(first / per_ms),
                granted=first,
            )
            .on_conflict_do_update(
                index_elements=["key"],
                set_={
                    "tokens": left,
                    "stamp_ms": sa.case((now_lit > t.c.stamp_ms, now_lit), else_=t.c.stamp_ms),
                    "full_ms": now_lit + sa.cast((cap - left) / rate, sa.BigInteger) + 1,
                    "granted": granted,
                },
            )
            .returning(t.c.granted, t.c.tokens)
        )
        row = (await self.store.execute_volatile(stmt))[0]
        return int(row.granted), float(row.tokens)


async def prune_rate_buckets(store: Store, now: int, batch_size: int, dry_run: bool = False) -> int:
    """Delete the buckets that are full again by ``now`` (as good as absent)."""
    t = rate_buckets
    where = t.c.full_ms < now
    if dry_run:
        return await store.count_where(t, where)
    return await store.delete_batched(t, where, [t.c.key], batch_size)
