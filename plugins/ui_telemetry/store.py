"""The UI telemetry table, its retention, and what the audit summary and dashboard read
(:class:`plugins.ui_telemetry.contract.UiTelemetry`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from host.api import Migration, Settings, Store

NAMESPACE = "ui_telemetry"
metadata = sa.MetaData()

events = sa.Table(
    "ui_telemetry_events",
    metadata,
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("received_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("owner", sa.String(300), nullable=False, index=True),
    sa.Column("session", sa.String(200), nullable=True),
    sa.Column("view", sa.String(200), nullable=False),
    sa.Column("action", sa.String(200), nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=True),
    sa.Column("event_metadata", sa.JSON, nullable=True),
)
MIGRATIONS = (Migration.create_tables(NAMESPACE, 1, "UI telemetry events", [events]),)


async def insert(store: Store, rows: list[dict[str, Any]]) -> None:
    async with store.write() as conn:
        await conn.execute(events.insert(), rows)


async def prune(
    store: Store, settings: Settings, max_age_days: float, now_ms: int, dry_run: bool
) -> dict[str, int]:
    cutoff = settings.retention.cutoff_ms(max_age_days, now_ms)
    if cutoff is None:
        return {"ui_telemetry_events": 0}
    old = events.c.received_ms < cutoff
    batch = settings.retention.batch_size
    removed = (
        await store.count_where(events, old)
        if dry_run
        else await store.delete_batched(events, old, [events.c.n], batch)
    )
    return {"ui_telemetry_events": removed}


async def counts(store: Store, since_ms: int) -> list[dict[str, Any]]:
    """Events received since ``since_ms`` per view and action, most first."""
    total = sa.func.count().label("events")
    stmt = (
        sa.select(events.c.view, events.c.action, total)
        .where(events.c.received_ms >= since_ms)
        .group_by(events.c.view, events.c.action)
        .order_by(total.desc(), events.c.view, events.c.action)
    )
    async with store.read() as conn:
        return [dict(row._mapping) for row in (await conn.execute(stmt)).all()]
