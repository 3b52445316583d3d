"""Firing schedules (``schedules.py`` holds their timing and records).

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
from typing import Any

import sqlalchemy as sa

from host.api import GatewayContext, GatewayError, now_ms
from plugins.pipelines.actions import OperatorActions
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.metrics import PipelineMetrics
from plugins.pipelines.runs import ACTIVE
from plugins.pipelines.schedules import (
    FIRING,
    due_ticks,
    idempotency_key,
    next_after,
    next_due,
    suspended,
)
from plugins.pipelines.start import RunOrigin, RunStarter, validate_input
from plugins.pipelines.tables import runs, schedule_fires, schedules

log = logging.getLogger("gateway.pipelines.schedules")

MAX_MISSED_RECORDED = 20
GRACE_MS = 60_000


class Scheduler:
    def __init__(
        self,
        gateway: GatewayContext,
        catalog: PipelineCatalog,
        starter: RunStarter,
        actions: OperatorActions,
        metrics: PipelineMetrics,
        *,
        lease_ms: int,
        poll_seconds: float,
    ) -> None:
        self.gateway = gateway
        self.store = gateway.store
        self.catalog = catalog
        self.starter = starter
        self.actions = actions
        self.metrics = metrics
        self.lease_ms = lease_ms
        self.poll_seconds = poll_seconds

    def _grace_ms(self) -> int:
        return max(GRACE_MS, int(self.poll_seconds * 4000))

    async def run_due(self) -> int | None:
        """Fire the due schedules, and the fires a dead or failed process left ``firing``;
        returns when to look again (``None``: no schedule)."""
        now = now_ms()
        store = self.store
        async with store.read() as conn:
            rows = (
                await conn.execute(sa.select(schedules).where(schedules.c.next_fire_ms <= now))
            ).all()
            stale = (
                await conn.execute(
                    sa.select(schedule_fires).where(
                        schedule_fires.c.outcome == FIRING,
                        schedule_fires.c.recorded_ms <= now - self.lease_ms,
                    )
                )
            ).all()
        for row in rows:
            ticks = due_ticks(row, now)
            if not ticks:
                continue
            latest = ticks[-1]
            fire = latest if now - latest <= self._grace_ms() else None
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
                self.metrics.schedule_fires.labels("missed").inc(len(missed))
            if fire is not None:
                await self._fire_taken(row, fire)
        for intent in stale:
            await self._recover(intent, now)
        async with store.read() as conn:
            nxt = (await conn.execute(next_due(self.lease_ms))).scalar()
        return None if nxt is None else int(nxt)

    async def _fire_taken(self, row: Any, tick: int) -> None:
        try:
            await self.fire(row, tick)
        except Exception:
            log.exception(
                "schedule %s failed to fire its tick %s; a worker fires it again in %s s",
                row.id,
                tick,
                self.lease_ms / 1000,
            )

    async def _recover(self, intent: Any, now: int) -> None:
        """Take over a fire left ``firing`` (compare-and-set on its ``recorded_ms``, so one
        worker does) and fire it; one too old to fire late is recorded as ``missed``."""
        store, tick = self.store, int(intent.tick_ms)
        late = now - tick > self._grace_ms()
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
                    schedule_fires.update()
                    .where(this_fire)
                    .values(outcome=outcome, recorded_ms=now)
                )
            if outcome == "missed":
                await conn.execute(
                    schedules.update()
                    .where(schedules.c.id == intent.schedule_id)
                    .values(missed=schedules.c.missed + 1)
                )
        if row is None or outcome is not None:
            self.metrics.schedule_fires.labels(outcome or "skipped_deleted").inc()
            return
        log.warning("schedule %s: firing its tick %s, left unfired by a worker", row.id, tick)
        await self._fire_taken(row, tick)

    async def fire(self, row: Any, tick: int, *, manual: bool = False) -> str:
        """Fire one tick of a schedule; returns the outcome (also stored on the schedule)."""
        run_id: str | None = None
        if suspended(self.gateway, row):
            outcome = "skipped_owner_removed"
        elif await self.gateway.lifecycle.paused():
            outcome = "skipped_paused"
        else:
            outcome = "fired"
            async with self.store.read() as conn:
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
                            await self.actions.cancel(
                                other.id, f"schedule:{row.id}", "overlap: cancel"
                            )
                        except GatewayError:
                            pass  # finished meanwhile
                pipeline = self.catalog.get(row.pipeline_id)
                if pipeline is None:
                    outcome = "failed_pipeline_missing"
                else:
                    try:
                        run_input = validate_input(pipeline, row.input)
                    except GatewayError:
                        outcome = "failed_invalid_input"
                    else:
                        trigger = {"type": "schedule", "schedule_id": row.id, "tick_ms": tick}
                        if manual:
                            trigger["manual"] = True
                        origin = RunOrigin(
                            trigger=trigger,
                            created_by=f"schedule:{row.id}",
                            owner=row.owner,
                            idempotency_key=idempotency_key(row.id, tick),
                        )
                        try:
                            run_id, _ = await self.starter.create_run(pipeline, run_input, origin)
                        except GatewayError as refused:  # by gateway_admit_run
                            outcome = f"skipped_{refused.code}"[:40]
        recorded = now_ms()
        async with self.store.write() as conn:
            if manual:
                await conn.execute(
                    self.store.dialect.upsert(
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
        self.metrics.schedule_fires.labels(outcome).inc()
        return outcome
