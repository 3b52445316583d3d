"""Schedules: 5-field cron in an IANA time zone, or a fixed interval.

Every worker knows when the next schedule falls due (the earliest ``next_fire_ms``,
read on each store poll and after each fire) and looks for due schedules then. Taking a
tick is one write transaction that moves the schedule's ``next_fire_ms`` on
(compare-and-set), records the tick as a once-only key and records its fire as
``firing`` (the intent), so with any number of processes each tick is taken once. The
run is created next, in its own transaction, under the idempotency key
``schedule:<id>@<tick>``, and the fire's outcome replaces ``firing``. A fire still
``firing`` after a lease (``lease_seconds``: its process died or its store write
failed in between) is taken over by a worker (compare-and-set again) and fired then;
the idempotency key makes a run created before the crash the tick's run, so each tick
fires exactly once. Ticks that fell due while no gateway ran are recorded as
``missed``, not replayed: only the latest due tick fires, and only if it is recent (a
recovered fire older than that is recorded as ``missed`` too). A fire while the
gateway is paused is recorded as ``skipped_paused``, and one of a schedule whose owner
can no longer sign in (a token removed from the config: ``suspended``) as
``skipped_owner_removed``, so a principal's schedules end with its access; the overlap
policy (``skip | queue | cancel``) decides what happens when the schedule's previous run
has not finished.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import croniter
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayContext, GatewayError, Principal, Store, now_ms, owned_by
from plugins.pipelines.gates import GATE_READ_ALL
from plugins.pipelines.models import ScheduleRecord
from plugins.pipelines.runs import ACTIVE
from plugins.pipelines.tables import runs, schedule_fires, schedules

if TYPE_CHECKING:
    from plugins.pipelines.engine import Engine

log = logging.getLogger("gateway.pipelines.schedules")

MAX_MISSED_RECORDED = 20
GRACE_MS = 60_000
FIRING = "firing"  # a fire's outcome while its tick is taken and its run not yet recorded


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


def next_due(recover_ms: int) -> sa.Select[Any]:
    """When a worker must look for due schedules next: the earliest ``next_fire_ms``, or
    the time a fire left ``firing`` is taken over (``recover_ms`` after it was recorded)."""
    firing = sa.select((schedule_fires.c.recorded_ms + recover_ms).label("due")).where(
        schedule_fires.c.outcome == FIRING
    )
    both = sa.select(schedules.c.next_fire_ms.label("due")).union_all(firing).subquery()
    return sa.select(sa.func.min(both.c.due))


def check_timing(cron: str | None, interval_seconds: float | None, timezone: str) -> None:
    """422 ``validation_failed`` (``details.param`` names the field) unless exactly one of
    ``cron`` (5 fields) and ``interval_seconds`` is given and ``timezone`` is known."""
    if (cron is None) == (interval_seconds is None):
        raise GatewayError(
            422,
            "validation_failed",
            "give exactly one of cron and interval_seconds",
            details={"param": "cron"},
        )
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        raise GatewayError(
            422,
            "validation_failed",
            "cron: not a valid 5-field cron expression",
            details={"param": "cron"},
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise GatewayError(
            422,
            "validation_failed",
            f"timezone: unknown IANA time zone {timezone!r}",
            details={"param": "timezone"},
        ) from None


def record(gateway: GatewayContext, row: Any) -> ScheduleRecord:
    return ScheduleRecord(**row._asdict(), suspended=suspended(gateway, row))


async def schedule_row(conn: AsyncConnection, schedule_id: str) -> Any:
    """The schedule's row, or None."""
    query = sa.select(schedules).where(schedules.c.id == schedule_id)
    return (await conn.execute(query)).first()


async def visible(conn: AsyncConnection, reader: Principal) -> list[Any]:
    """The rows of the schedules ``reader`` may read, oldest first."""
    query = (
        sa.select(schedules)
        .where(owned_by(schedules.c.owner, reader, GATE_READ_ALL))
        .order_by(schedules.c.created_ms)
    )
    return list((await conn.execute(query)).all())


async def insert(store: Store, values: dict[str, Any]) -> bool:
    """Store a new schedule; False when one with its id exists (nothing is written)."""
    async with store.write() as conn:
        inserted = await conn.execute(store.dialect.insert_ignore(schedules).values(**values))
    return bool(inserted.rowcount)


async def remove(store: Store, schedule_id: str) -> bool:
    """Remove a schedule (its runs go on); whether there was one."""
    async with store.write() as conn:
        result = await conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
    return bool(result.rowcount)


def _grace_ms(engine: Engine) -> int:
    return max(GRACE_MS, int(engine.poll_seconds * 4000))


async def run_due(engine: Engine) -> int | None:
    """Fire the due schedules, and the fires a dead or failed process left ``firing``;
    returns when to look again (``None``: no schedule)."""
    now = now_ms()
    store = engine.store
    async with store.read() as conn:
        rows = (
            await conn.execute(sa.select(schedules).where(schedules.c.next_fire_ms <= now))
        ).all()
        stale = (
            await conn.execute(
                sa.select(schedule_fires).where(
                    schedule_fires.c.outcome == FIRING,
                    schedule_fires.c.recorded_ms <= now - engine.lease_ms,
                )
            )
        ).all()
    for row in rows:
        ticks = due_ticks(row, now)
        if not ticks:
            continue
        latest = ticks[-1]
        fire = latest if now - latest <= _grace_ms(engine) else None
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
            if fire is not None:
                # The intent, in the transaction that takes the tick: if the run is not
                # created (a crash, a failed write), a worker takes the fire over.
                await conn.execute(
                    store.dialect.insert_ignore(schedule_fires).values(
                        schedule_id=row.id, tick_ms=fire, outcome=FIRING, recorded_ms=now
                    )
                )
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
            await _fire_taken(engine, row, fire)
    for intent in stale:
        await _recover(engine, intent, now)
    async with store.read() as conn:
        nxt = (await conn.execute(next_due(engine.lease_ms))).scalar()
    return None if nxt is None else int(nxt)


async def _fire_taken(engine: Engine, row: Any, tick: int) -> None:
    try:
        await fire_schedule(engine, row, tick)
    except Exception:
        log.exception(
            "schedule %s failed to fire its tick %s; a worker fires it again in %s s",
            row.id,
            tick,
            engine.lease_ms / 1000,
        )


async def _recover(engine: Engine, intent: Any, now: int) -> None:
    """Take over a fire left ``firing`` (compare-and-set on its ``recorded_ms``, so one
    worker does) and fire it; one too old to fire late is recorded as ``missed``."""
    store, tick = engine.store, int(intent.tick_ms)
    late = now - tick > _grace_ms(engine)
    this_fire = (
        (schedule_fires.c.schedule_id == intent.schedule_id)
        & (schedule_fires.c.tick_ms == tick)
        & (schedule_fires.c.outcome == FIRING)
    )
    async with store.write() as conn:
        taken = await conn.execute(
            schedule_fires.update()
            .where(this_fire, schedule_fires.c.recorded_ms == intent.recorded_ms)
            .values(recorded_ms=now)
        )
        if not taken.rowcount:
            return  # another worker took it over, or it was fired meanwhile
        row = (
            await conn.execute(sa.select(schedules).where(schedules.c.id == intent.schedule_id))
        ).first()
        outcome = "skipped_deleted" if row is None else "missed" if late else None
        if outcome is not None:
            await conn.execute(
                schedule_fires.update().where(this_fire).values(outcome=outcome, recorded_ms=now)
            )
        if outcome == "missed":
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == intent.schedule_id)
                .values(missed=schedules.c.missed + 1)
            )
    if row is None or outcome is not None:
        engine.m_fires.labels(outcome or "skipped_deleted").inc()
        return
    log.warning("schedule %s: firing its tick %s, left unfired by a worker", row.id, tick)
    await _fire_taken(engine, row, tick)


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
                        # This tick's own run, if a fire that died created it already.
                        runs.c.idempotency_key != idempotency_key(row.id, tick),
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
        if manual:
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
        else:
            # The tick's intent becomes its outcome, once: a worker that took the fire
            # over meanwhile (this one seemed dead) recorded it already.
            ended = await conn.execute(
                schedule_fires.update()
                .where(
                    schedule_fires.c.schedule_id == row.id,
                    schedule_fires.c.tick_ms == tick,
                    schedule_fires.c.outcome == FIRING,
                )
                .values(outcome=outcome, run_id=run_id, recorded_ms=recorded)
            )
            if not ended.rowcount:
                return outcome
        await conn.execute(
            schedules.update()
            .where(schedules.c.id == row.id)
            .values(last_fire_ms=tick, last_outcome=outcome, last_run_id=run_id)
        )
    engine.m_fires.labels(outcome).inc()
    return outcome
