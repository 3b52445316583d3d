"""The worker loop of one gateway process. It claims ``pending`` runs in creation order,
up to ``max_concurrent_runs`` counted over the whole store, and holds a lease on each
(``lease_owner``/``lease_expires_ms``) that it renews by heartbeat; a run whose lease
lapsed (its process died) is re-queued (the sweep) and continues from its last completed
step. The loop also resolves approvals whose timeout passed, fires due schedules, stops
the steps of runs cancelled (or taken over) elsewhere, fails a run whose claims keep
ending in a crash, and keeps the run and approval gauges current. Each of these runs on
its own timer (see ``tick``); a wake (``WorkerState.wake``) makes the loop come round at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Event, GatewayContext, now_ms
from plugins.pipelines import schedules
from plugins.pipelines.actions import OperatorActions, end_run
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.config import PipelinesConfig
from plugins.pipelines.metrics import PipelineMetrics
from plugins.pipelines.runner import RunRunner
from plugins.pipelines.runs import ACTIVE, stream_of
from plugins.pipelines.scheduler import Scheduler
from plugins.pipelines.tables import approvals, runs, step_journal
from plugins.pipelines.worker_state import WorkerState
from plugins.pipelines.writer import RunWriter

log = logging.getLogger("gateway.pipelines")

# The run and approval gauges follow a change in this process within GAUGE_MIN_SECONDS,
# and changes made by other processes within GAUGE_MAX_SECONDS.
GAUGE_MIN_SECONDS = 1.0
GAUGE_MAX_SECONDS = 15.0
# A worker with runs in progress reads this often whether another process cancelled one
# of them (or took it over), and stops its step: a cancel lands within about a second
# wherever it was asked (in the process holding the run, at once).
CANCEL_CHECK_SECONDS = 0.5


class Worker:
    def __init__(
        self,
        gateway: GatewayContext,
        config: PipelinesConfig,
        catalog: PipelineCatalog,
        writer: RunWriter,
        runner: RunRunner,
        scheduler: Scheduler,
        actions: OperatorActions,
        metrics: PipelineMetrics,
    ) -> None:
        self.store = gateway.store
        self.catalog = catalog
        self.state: WorkerState = writer.worker
        self.writer = writer
        self.runner = runner
        self.scheduler = scheduler
        self.actions = actions
        self.metrics = metrics
        self.max_concurrent = config.max_concurrent_runs  # 0: this worker claims no runs
        self.max_crashed_claims = config.max_crashed_claims
        self.lease_ms = int(config.lease_seconds * 1000)
        self.poll_seconds = config.poll_seconds
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_heartbeat = 0.0
        self._last_watch = 0.0
        # The loop's timers (see ``tick``), monotonic seconds; the due times of approval
        # timeouts and schedule ticks are in ``WorkerState``.
        self._next_poll = 0.0
        self._last_gauges = -GAUGE_MAX_SECONDS
        self._gauges_dirty = True

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="pipelines-worker")

    async def stop(self) -> None:
        self._stopping = True
        self.state.wake.set()
        if self._loop_task is not None:
            # Let the current tick finish its transaction rather than cancel it mid-way.
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(self._loop_task)
            except TimeoutError:
                self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        tasks = list(self.state.tasks.items())
        for _run_id, task in tasks:
            task.cancel()
        await self.runner.execution.close()  # kills step processes; none is started from now on
        for _run_id, task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.writer.critical:
            await asyncio.gather(*self.writer.critical, return_exceptions=True)
        # A graceful stop hands our runs back at once (a killed process leaves it to the
        # lease); they continue from their last completed step in the next process.
        if tasks:
            with contextlib.suppress(Exception):
                async with self.store.write() as conn:
                    await conn.execute(
                        runs.update()
                        .where(
                            runs.c.status == "running", runs.c.lease_owner == self.state.worker_id
                        )
                        .values(
                            status="pending",
                            lease_owner=None,
                            lease_expires_ms=None,
                            # This claim ended cleanly: it does not count as a crash.
                            stalled_claims=sa.case(
                                (runs.c.stalled_claims > 0, runs.c.stalled_claims - 1), else_=0
                            ),
                        )
                    )

    async def _loop(self) -> None:
        while not self._stopping:
            woken = self.state.wake.is_set()
            self.state.wake.clear()  # a wake during the tick makes the next one come at once
            try:
                await self.tick(woken)
                delay = self._next_tick() - time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pipelines worker tick failed")
                delay = self.failed_tick_delay()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self.state.wake.wait()

    def failed_tick_delay(self) -> float:
        """How long the loop waits after a failed tick (the store busy or unreachable): not
        at once again, as what failed may still be due, but soon enough that a heartbeat
        that failed is retried several times before this worker's leases lapse, whatever
        ``poll_seconds`` is (a large poll would otherwise let another worker take over
        runs that are still running here)."""
        return min(self.poll_seconds, self.lease_ms / 6000)

    async def tick(self, woken: bool = True) -> None:
        """One pass of the worker. A wake (a run created, resumed, released or finished in
        this process) claims at once; everything else runs on its own timer, so an idle
        worker costs one read every ``poll_seconds``: that read finds runs another process
        left ``pending``, lapsed leases, and when the next approval timeout and schedule
        tick fall due; those run at their time, not on every pass."""
        now_m = time.monotonic()
        if self.state.tasks and now_m - self._last_heartbeat > self.lease_ms / 3000:
            await self.heartbeat()
        if self.state.tasks and now_m - self._last_watch >= CANCEL_CHECK_SECONDS:
            await self.watch_runs()
        pending = lapsed = False
        if now_m >= self._next_poll:
            self._next_poll = now_m + self.poll_seconds
            pending, lapsed = await self._poll_store()
        if lapsed:
            await self.sweep()
            pending = True
        now = now_ms()
        if self.state.expiry_due_ms is not None and self.state.expiry_due_ms <= now:
            await self.actions.expire_approvals()
        if (
            not self._stopping
            and self.state.schedule_due_ms is not None
            and (self.state.schedule_due_ms <= now)
        ):
            self.state.schedule_due_ms = await self.scheduler.run_due()
        if woken or pending:
            for run_id in await self.claim():
                self.state.tasks[run_id] = asyncio.create_task(
                    self.runner.execute(run_id), name=f"run:{run_id}"
                )
        self._gauges_dirty = self._gauges_dirty or woken or pending or lapsed
        if time.monotonic() >= self._gauges_due():
            await self.update_gauges()

    def _gauges_due(self) -> float:
        wait = GAUGE_MIN_SECONDS if self._gauges_dirty else GAUGE_MAX_SECONDS
        return self._last_gauges + wait

    def _next_tick(self) -> float:
        """When the loop must run again without a wake (monotonic seconds)."""
        now_m, now = time.monotonic(), now_ms()
        due = [self._next_poll, self._gauges_due()]
        if self.state.tasks:
            due.append(self._last_heartbeat + self.lease_ms / 3000)
            due.append(self._last_watch + CANCEL_CHECK_SECONDS)
        for at_ms in (self.state.expiry_due_ms, self.state.schedule_due_ms):
            if at_ms is not None:
                due.append(now_m + (at_ms - now) / 1000)
        return min(due)

    async def _poll_store(self) -> tuple[bool, bool]:
        """One read (one statement) for what other processes stored: is a run
        ``pending``, has a running run's lease lapsed, and when are the next approval
        timeout and schedule tick."""
        now = now_ms()
        pending = sa.exists().where(runs.c.status == "pending")
        lapsed = sa.exists().where(runs.c.status == "running", runs.c.lease_expires_ms < now)
        expiry = (
            sa.select(sa.func.min(approvals.c.expires_ms))
            .where(approvals.c.status == "pending")
            .scalar_subquery()
        )
        schedule = schedules.next_due(self.lease_ms).scalar_subquery()
        async with self.store.read() as conn:
            row = (await conn.execute(sa.select(pending, lapsed, expiry, schedule))).one()
        self.state.expiry_due_ms = None if row[2] is None else int(row[2])
        self.state.schedule_due_ms = None if row[3] is None else int(row[3])
        return bool(row[0]), bool(row[1])

    async def heartbeat(self) -> None:
        """Extend this worker's leases. Counted as done only once the write succeeded: one
        that failed (the store busy) is tried again at the next tick."""
        began = time.monotonic()
        mine = [r for r, t in self.state.tasks.items() if not t.done()]
        if not mine:
            self._last_heartbeat = began
            return
        async with self.store.write() as conn:
            await conn.execute(
                runs.update()
                .where(
                    runs.c.id.in_(mine),
                    runs.c.status == "running",
                    runs.c.lease_owner == self.state.worker_id,
                )
                .values(lease_expires_ms=now_ms() + self.lease_ms)
            )
            lost = await self._lost_runs(conn, mine)
        self._last_heartbeat = self._last_watch = began
        self.state.stop_tasks(lost)

    async def watch_runs(self) -> None:
        """Stop the steps of runs another process cancelled (or took over): one read."""
        began = time.monotonic()
        mine = [r for r, t in self.state.tasks.items() if not t.done()]
        lost: list[str] = []
        if mine:
            async with self.store.read() as conn:
                lost = await self._lost_runs(conn, mine)
        self._last_watch = began
        self.state.stop_tasks(lost)

    async def _lost_runs(self, conn: AsyncConnection, mine: list[str]) -> list[str]:
        """Of ``mine``, the runs no longer this worker's: cancelled, or re-queued or
        claimed by another worker after our lease lapsed. A run this worker moved on
        itself (waiting, paused, finished) is not one: its task is on its last lines."""
        rows = await conn.execute(
            sa.select(runs.c.id).where(
                runs.c.id.in_(mine),
                sa.or_(
                    runs.c.status == "cancelled",
                    sa.and_(
                        runs.c.status.in_(("pending", "running")),
                        sa.or_(
                            runs.c.lease_owner.is_(None), runs.c.lease_owner != self.state.worker_id
                        ),
                    ),
                ),
            )
        )
        return [r.id for r in rows]

    async def sweep(self) -> None:
        """Re-queue running runs whose lease lapsed: their process is gone."""
        async with self.store.write() as conn:
            await conn.execute(
                runs.update()
                .where(runs.c.status == "running", runs.c.lease_expires_ms < now_ms())
                .values(status="pending", lease_owner=None, lease_expires_ms=None)
            )

    async def claim(self) -> list[str]:
        if self._stopping:
            return []
        claimed: list[str] = []
        crashed: list[str] = []  # the pipelines of runs failed as run_crashed_repeatedly
        events: list[Event] = []
        async with self.store.write() as conn:
            # Counting the running runs and claiming more is one step for every process on
            # the store (SQLite's write lock already makes it one; PostgreSQL needs the
            # named lock), so replicas together never exceed max_concurrent_runs.
            await self.store.dialect.serialize(conn, "pipelines.claim")
            active = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(runs).where(runs.c.status == "running")
                )
            ).scalar_one()
            room = self.max_concurrent - int(active)
            if room <= 0:
                return []
            rows = await conn.execute(
                self.store.dialect.claim(
                    sa.select(
                        runs.c.id,
                        runs.c.claims,
                        runs.c.cursor,
                        runs.c.stalled_claims,
                        runs.c.pipeline_id,
                    )
                    .where(runs.c.status == "pending")
                    .order_by(runs.c.n)
                    .limit(room)
                )
            )
            now = now_ms()
            for row in rows.all():
                stalled = row.stalled_claims or 0
                if stalled >= self.max_crashed_claims:
                    events.append(await self._fail_crashed(conn, row, stalled, now))
                    crashed.append(row.pipeline_id)
                    continue
                await conn.execute(
                    runs.update()
                    .where(runs.c.id == row.id)
                    .values(
                        status="running",
                        lease_owner=self.state.worker_id,
                        lease_expires_ms=now + self.lease_ms,
                        claims=row.claims + 1,
                        stalled_claims=stalled + 1,
                        started_ms=sa.func.coalesce(runs.c.started_ms, now),
                        updated_ms=now,
                    )
                )
                events.append(
                    await self.store.append_event(
                        stream_of(row.id),
                        "run.started",
                        {"run_id": row.id, "claim": row.claims + 1, "from_step_index": row.cursor},
                        conn,
                    )
                )
                claimed.append(row.id)
        await self.writer.notify(events)
        for pipeline_id in crashed:
            self.metrics.finished.labels(pipeline_id, "failed").inc()
        if crashed:
            self.state.wake.set()  # their slots are free for the next pending runs
        return claimed

    async def _fail_crashed(self, conn: AsyncConnection, row: Any, stalled: int, now: int) -> Event:
        """Fail a run whose last ``stalled`` claims all ended without progress: each time
        its process died (or stalled past the lease) while it ran, so claiming it again
        would most likely take this process down too."""
        in_progress = (
            await conn.execute(
                sa.select(step_journal.c.path)
                .where(step_journal.c.run_id == row.id, step_journal.c.status == "running")
                .order_by(step_journal.c.started_ms)
            )
        ).scalars()
        steps = list(in_progress)
        where = f" in step {', '.join(map(repr, steps))}" if steps else ""
        error = {
            "code": "run_crashed_repeatedly",
            "message": (
                f"the run was claimed {stalled} times in a row without progress{where}: each "
                "time the process running it died or stalled past its lease "
                f"(max_crashed_claims = {self.max_crashed_claims})"
            ),
            "claims": row.claims,
            "steps": steps,
        }
        await end_run(conn, row.id, "failed", error, now, lease_owner=None, lease_expires_ms=None)
        log.error("run %s failed: %s", row.id, error["message"])
        return await self.store.append_event(
            stream_of(row.id), "run.failed", {"run_id": row.id, "error": error}, conn
        )

    async def update_gauges(self) -> None:
        """Non-terminal runs by state (over the whole store) and pending approvals: soon
        after a change in this process (at most every ``GAUGE_MIN_SECONDS``), otherwise
        every ``GAUGE_MAX_SECONDS`` (changes made by other processes)."""
        self._last_gauges = time.monotonic()
        self._gauges_dirty = False
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(runs.c.status, runs.c.pipeline_id, sa.func.count())
                .where(runs.c.status.in_(ACTIVE))
                .group_by(runs.c.status, runs.c.pipeline_id)
            )
            counts = {(r[0], r[1]): int(r[2]) for r in rows}
            pending = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(approvals)
                    .where(approvals.c.status == "pending")
                )
            ).scalar_one()
        self.metrics.approvals_pending.set(int(pending))
        for pipeline_id in set(self.catalog.current) | {p for _s, p in counts}:
            for state in ACTIVE:
                self.metrics.runs.labels(state, pipeline_id).set(
                    counts.get((state, pipeline_id), 0)
                )
