"""What the alerts count over a recent window, across replicas: safety blocks (the
``safety.block`` events the dashboard observes in the process that made them) and
failed model calls (the rise of the ``gateway_llm_requests_total{outcome="error"}``
counter of this process's metrics, which the openai_compat plugin keeps).

Each process adds what it saw to ``dashboard_signals`` (one row per kind and
``BUCKET_MS`` bucket, counts added with an upsert), at most ``FLUSH_SECONDS`` later and
before it computes alerts; every replica's alerts read the sums, so a spike behind a
load balancer alerts on all of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import sqlalchemy as sa

from host.api import GatewayContext, now_ms
from plugins.dashboard.tables import signals as table

log = logging.getLogger("gateway.dashboard")

PROVIDER_METRIC = "gateway_llm_requests"
BLOCK = "safety_block"
PROVIDER_ERROR = "provider_error"
BUCKET_MS = 5_000
FLUSH_SECONDS = 1.0
KEEP_MS = 86_400_000 + BUCKET_MS  # the longest signal_window_seconds


class Signals:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        # (kind, bucket) -> [count, first_ms], not yet added to the store.
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._errors_seen = provider_errors(ctx)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pruned_ms = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def blocked(self, ts_ms: int) -> None:
        self._add(BLOCK, ts_ms, 1)

    def _add(self, kind: str, ts_ms: int, n: int) -> None:
        key = (kind, ts_ms - ts_ms % BUCKET_MS)
        found = self._pending.get(key)
        if found is None:
            self._pending[key] = [n, ts_ms]
        else:
            found[0] += n
            found[1] = min(found[1], ts_ms)

    def _sample_errors(self) -> None:
        total = provider_errors(self.ctx)
        if total > self._errors_seen:
            self._add(PROVIDER_ERROR, now_ms(), int(total - self._errors_seen))
        self._errors_seen = total

    async def flush(self) -> None:
        """Add what this process saw to the store's counts."""
        async with self._lock:
            self._sample_errors()
            batch, self._pending = self._pending, {}
            if not batch:
                return
            store = self.ctx.store
            async with store.write() as conn:
                for (kind, bucket), (n, first) in sorted(batch.items()):
                    stmt = store.dialect.insert(table).values(
                        kind=kind, bucket_ms=bucket, count=n, first_ms=first
                    )
                    await conn.execute(
                        stmt.on_conflict_do_update(
                            index_elements=["kind", "bucket_ms"],
                            set_={
                                "count": table.c.count + stmt.excluded.count,
                                "first_ms": sa.case(
                                    (table.c.first_ms <= stmt.excluded.first_ms, table.c.first_ms),
                                    else_=stmt.excluded.first_ms,
                                ),
                            },
                        )
                    )
                now = now_ms()
                if now - self._pruned_ms > 60_000:
                    self._pruned_ms = now
                    await conn.execute(table.delete().where(table.c.bucket_ms < now - KEEP_MS))

    async def since(self, kind: str, since_ms: int) -> tuple[int, int | None]:
        """``kind`` counted by every replica in the buckets from ``since_ms`` on, and the
        first of them."""
        await self.flush()
        stmt = sa.select(sa.func.sum(table.c.count), sa.func.min(table.c.first_ms)).where(
            table.c.kind == kind, table.c.bucket_ms > since_ms - BUCKET_MS
        )
        async with self.ctx.store.read() as conn:
            total, first = (await conn.execute(stmt)).one()
        return int(total or 0), (int(first) if first is not None else None)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # a store hiccup: the counts wait for the next flush
                log.exception("storing dashboard signals failed")


def provider_errors(ctx: GatewayContext) -> float:
    total = 0.0
    for family in ctx.metrics.registry.collect():
        if family.name != PROVIDER_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") == "error":
                total += sample.value
    return total
