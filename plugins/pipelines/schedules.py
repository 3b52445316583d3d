"""Schedules: 5-field cron in an IANA time zone, or a fixed interval.

Every worker knows when the next schedule falls due (the earliest ``next_fire_ms``,
read on each store poll and after each fire) and looks for due schedules then. Taking a
tick is one write transaction that moves the schedule's ``next_fire_ms`` on
(compare-and-set) and records the tick as a once-only key, so with any number of
processes each tick fires once. Ticks
that fell due while no gateway ran are recorded as ``missed``, not replayed: only the
latest due tick fires, and only if it is recent. A fire while the gateway is paused is
recorded as ``skipped_paused``, and one of a schedule whose owner can no longer sign in
(a token removed from the config: ``suspended``) as ``skipped_owner_removed``, so a
principal's schedules end with its access; the overlap policy (``skip | queue | cancel``) decides
what happens when the schedule's previous run has not finished.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from croniter import croniter

from host.api import GatewayError
from host.storage import now_ms
from plugins.pipelines.tables import runs, schedule_fires, schedules

if TYPE_CHECKING:
    from host.api import GatewayContext
    from plugins.pipelines.engine import Engine

log = logging.getLogger("gateway.pipelines.schedules")

ACTIVE = ("pending", "running", "waiting", "paused")
MAX_MISSED_RECORDED = 20
GRACE_MS = 60_000


def next_after(cron: str | None, tz: str, interval: float | None, after_ms: int) -> int:
    """The first tick strictly after ``after_ms``."""
    if interval is not None:
        return after_ms + int(interval * 1000)
    zone = ZoneInfo(tz)
    base = datetime.fromtimestamp(after_ms / 1000, zone)
    nxt: datetime = croniter(cron, base).get_next(datetime)
    return int(nxt.timestamp() * 1000)


def due_ticks(row: Any, now: int) -> list[int]:
    """Ticks from ``next_fire_ms`` up to ``now`` (at most a bounded number)."""
    ticks: list[int] = []
    tick = int(row.next_fire_ms)
    while tick <= now and len(ticks) < 10_000:
        ticks.append(tick)
        tick = next_after(row.cron, row.timezone, row.interval_seconds, tick)
    return ticks


def suspended(gateway: GatewayContext, row: Any) -> str | None:
    """``owner_removed`` when the schedule's owner can no longer sign in, else None (also
    for schedules made before owners were recorded: they keep firing)."""
    if row.owner is not None and not gateway.auth.principal_exists(row.owner):
        return "owner_removed"
    return None


def idempotency_key(schedule_id: str, tick_ms: int) -> str:
    return f"schedule:{schedule_id}@{tick_ms}"


async def run_due(engine: Engine) -> int | None:
    """Fire the due schedules; returns when the next one falls due (``None``: none)."""
    now = now_ms()
    store = engine.store
    async with store.read() as conn:
        rows = (
            await conn.execute(sa.select(schedules).where(schedules.c.next_fire_ms <= now))
        ).all()
    for row in rows:
        ticks = due_ticks(row, now)
        if not ticks:
            continue
        latest = ticks[-1]
        fire = latest if now - latest <= max(GRACE_MS, int(engine.poll_seconds * 4000)) else None
        missed = ticks[:-1] if fire is not None else ticks
        new_next = next_after(row.cron, row.timezone, row.interval_seconds, max(now, latest))
        async with store.write() as conn:
            taken = await conn.execute(
                schedules.update()
                .where(schedules.c.id == row.id, schedules.c.next_fire_ms == row.next_fire_ms)
                .values(next_fire_ms=new_next, missed=schedules.c.missed + len(missed))
            )
            if not taken.rowcount:
                continue  # another worker took these ticks
            if fire is not None and not await store.once("tick", f"{row.id}@{fire}", conn=conn):
                fire = None
            for tick in missed[-MAX_MISSED_RECORDED:]:
                await conn.execute(
                    store.dialect.insert_ignore(schedule_fires).values(
                        schedule_id=row.id, tick_ms=tick, outcome="missed", recorded_ms=now
                    )
                )
            if missed and fire is None:
                await conn.execute(
                    schedules.update()
                    .where(schedules.c.id == row.id)
                    .values(last_outcome="missed", last_fire_ms=missed[-1])
                )
        if missed:
            engine.m_fires.labels("missed").inc(len(missed))
        if fire is not None:
            try:
                await fire_schedule(engine, row, fire)
            except Exception:
                log.exception("schedule %s failed to fire", row.id)
    async with store.read() as conn:
        nxt = (await conn.execute(sa.select(sa.func.min(schedules.c.next_fire_ms)))).scalar()
    return None if nxt is None else int(nxt)


async def fire_schedule(engine: Engine, row: Any, tick: int, *, manual: bool = False) -> str:
    """Fire one tick of a schedule; returns the outcome (also stored on the schedule)."""
    run_id: str | None = None
    if suspended(engine.gateway, row):
        outcome = "skipped_owner_removed"
    elif await engine.gateway.lifecycle.paused():
        outcome = "skipped_paused"
    else:
        outcome = "fired"
        async with engine.store.read() as conn:
            active = (
                await conn.execute(
                    sa.select(runs.c.id).where(
                        runs.c.pipeline_id == row.pipeline_id,
                        runs.c.idempotency_key.like(f"schedule:{row.id}@%"),
                        runs.c.status.in_(ACTIVE),
                    )
                )
            ).all()
        if active and row.overlap == "skip":
            outcome = "skipped_overlap"
        else:
            if active and row.overlap == "cancel":
                for other in active:
                    try:
                        await engine.cancel(other.id, f"schedule:{row.id}", "overlap: cancel")
                    except GatewayError:
                        pass  # finished meanwhile
            pipeline = engine.catalog.get(row.pipeline_id)
            if pipeline is None:
                outcome = "failed_pipeline_missing"
            else:
                try:
                    run_input = engine.validate_input(pipeline, row.input)
                except GatewayError:
                    outcome = "failed_invalid_input"
                else:
                    trigger = {"type": "schedule", "schedule_id": row.id, "tick_ms": tick}
                    if manual:
                        trigger["manual"] = True
                    run_id, _ = await engine.create_run(
                        pipeline,
                        run_input,
                        trigger=trigger,
                        created_by=f"schedule:{row.id}",
                        owner=row.owner,
                        idempotency_key=idempotency_key(row.id, tick),
                    )
    recorded = now_ms()
    async with engine.store.write() as conn:
        await conn.execute(
            engine.store.dialect.upsert(
                schedule_fires,
                ["schedule_id", "tick_ms"],
                {
                    "schedule_id": row.id,
                    "tick_ms": tick,
                    "outcome": outcome,
                    "run_id": run_id,
                    "recorded_ms": recorded,
                },
            )
        )
        await conn.execute(
            schedules.update()
            .where(schedules.c.id == row.id)
            .values(last_fire_ms=tick, last_outcome=outcome, last_run_id=run_id)
        )
    engine.m_fires.labels(outcome).inc()
    return outcome
