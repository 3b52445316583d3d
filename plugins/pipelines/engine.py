"""The durable run engine.

Every state change is written with its event in one store transaction, and the event is
published (``EventHub.notify``) only after the commit. A worker (one per gateway
process) claims ``pending`` runs in creation order, up to the concurrency limit counted
over the whole store, and holds a lease on each (``lease_owner``/``lease_expires_ms``)
that it renews by heartbeat; a run whose lease lapsed (its process died) is re-queued and
continues from its last completed step. A run's ``cursor`` is the index of the next
top-level step; ``results`` holds every completed step's output. The step journal
(``pipelines_step_journal``) holds every step by its path (``review.approve``,
``count[2].tick``): its attempts, written before each attempt, and, once finished, its
outcome, which a resumed run replays instead of running the step again. So a step that
was in progress when the process died runs again (at least once); a finished one never.

A run stores the definition it started with (version and fingerprint); a run resumed in
a process whose catalog holds another definition is rebuilt from the stored module
source, or fails with ``definition_changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from quart import Quart
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Event, GatewayContext, GatewayError, context
from host.errors import validation_message
from host.storage import now_ms
from plugins.pipelines import execution, schedules
from plugins.pipelines.catalog import PipelineCatalog, definition_key
from plugins.pipelines.config import PipelinesConfig
from plugins.pipelines.definition import Pipeline, Step
from plugins.pipelines.idempotency import shown
from plugins.pipelines.kinds import StepError, Suspend
from plugins.pipelines.runs import ACTIVE, TERMINAL, jsonable, run_row, stream_of
from plugins.pipelines.strict_json import NotJSON, step_output, strict_jsonable
from plugins.pipelines.tables import (
    approvals,
    breakpoints,
    definition_sources,
    runs,
    step_journal,
    step_results,
)

log = logging.getLogger("gateway.pipelines")

ENGINE_KEY = "pipelines.engine"
# The run and approval gauges follow a change in this process within GAUGE_MIN_SECONDS,
# and changes made by other processes within GAUGE_MAX_SECONDS.
GAUGE_MIN_SECONDS = 1.0
GAUGE_MAX_SECONDS = 15.0
# A worker with runs in progress reads this often whether another process cancelled one
# of them (or took it over), and stops its step: a cancel lands within about a second
# wherever it was asked (in the process holding the run, at once).
CANCEL_CHECK_SECONDS = 0.5


class LostRun(Exception):
    """The run is no longer ours to advance (cancelled, or our lease lapsed)."""


class DefinitionChanged(Exception):
    """The definition a run started with cannot be had in this process."""


FINISHED_STEP = ("completed", "failed", "skipped")
# Events a transaction appends to a run's stream: (type, data without ``run_id``).
Written = list[tuple[str, dict[str, Any]]]


@dataclass
class StepContext:
    """What a step function sees."""

    engine: Engine
    run_id: str
    pipeline: Pipeline
    input: dict[str, Any]
    results: dict[str, Any]
    step: Step
    resolution: dict[str, Any] | None = None
    iteration: int = 0
    nested: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # the step's path: its id, under its parents' (``review.approve``)
    attempt: int = 0  # 1 on the first start of this step; counts retries and re-runs
    resolutions: dict[str, Any] = field(default_factory=dict)  # by step path
    journal: dict[str, dict[str, Any]] = field(default_factory=dict)  # by step path
    released: str | None = None  # the step path a release lets past its breakpoint once

    @property
    def gateway(self) -> GatewayContext:
        return self.engine.gateway

    @property
    def step_path(self) -> str:
        return self.path or self.step.id

    @property
    def step_key(self) -> str:
        """``<run id>:<step path>``: the same on every attempt of this step, also when it
        runs again after a restart. Pass it to external systems as an idempotency key."""
        return f"{self.run_id}:{self.step_path}"

    async def delta(self, text: str) -> None:
        """Publish a ``step.delta`` event (token streaming), naming this attempt: a retried
        step streams its text again, and a reader tells the attempts apart by it."""
        await self.engine.publish(
            self.run_id,
            "step.delta",
            {"step": self.step_path, "attempt": self.attempt, "text": text},
        )

    async def usage(self, prompt_tokens: int, completion_tokens: int, total_tokens: int) -> None:
        """Publish a ``step.usage`` event: the tokens this attempt consumed (a failed
        attempt's tokens count too)."""
        await self.engine.publish(
            self.run_id,
            "step.usage",
            {
                "step": self.step_path,
                "attempt": self.attempt,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": total_tokens,
            },
        )

    async def run_steps(self, steps: list[Step], scope: str = "") -> dict[str, Any]:
        """Run nested steps in order (branch, parallel, loop); returns their outputs.
        A nested step's path is ``<this path><scope>.<id>``: a kind that runs the same
        steps more than once must give each pass its own ``scope`` (loops use ``[i]``)."""
        return await self.engine.run_nested(self, steps, scope)

    async def decide(self, suffix: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run: the value is stored under ``<path><suffix>`` and a
        resumed run gets the stored value (branch conditions, loop tests)."""
        return await self.engine.decide(self, self.step_path + suffix, compute)


class Engine:
    def __init__(self, app: Quart, catalog: PipelineCatalog, config: PipelinesConfig) -> None:
        self.app = app
        self.gateway = context(app)
        self.store = self.gateway.store
        self.hub = self.gateway.hub
        self.catalog = catalog
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_concurrent = config.max_concurrent_runs  # 0: this worker claims no runs
        self.lease_ms = int(config.lease_seconds * 1000)
        self.poll_seconds = config.poll_seconds
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_heartbeat = 0.0
        self._last_watch = 0.0
        # The worker loop's timers (see ``tick``): monotonic seconds, or wall ms for what
        # the store holds (``None``: nothing known to fall due).
        self._next_poll = 0.0
        self._last_gauges = -GAUGE_MAX_SECONDS
        self._gauges_dirty = True
        self._expiry_due_ms: int | None = None
        self._schedule_due_ms: int | None = None
        self._critical: set[asyncio.Future[Any]] = set()
        self._stored_sources: set[str] = set()  # digests known to be in the store
        self._init_metrics()
        self.execution = execution.StepExecution(config, self.gateway.metrics.registry)
        self.max_crashed_claims = config.max_crashed_claims

    def _init_metrics(self) -> None:
        reg = self.gateway.metrics.registry
        self.m_runs = Gauge(
            "gateway_pipeline_runs",
            "Runs by state and pipeline",
            ["state", "pipeline"],
            registry=reg,
        )
        self.m_finished = Counter(
            "gateway_pipeline_runs_finished",
            "Runs that reached a terminal state",
            ["pipeline", "status"],
            registry=reg,
        )
        self.m_step = Histogram(
            "gateway_pipeline_step_duration_seconds",
            "Step duration by pipeline, kind and outcome",
            ["pipeline", "kind", "outcome"],
            registry=reg,
        )
        self.m_fires = Counter(
            "gateway_pipeline_schedule_fires",
            "Schedule ticks by outcome (fired, skipped_paused, skipped_overlap, missed, ...)",
            ["outcome"],
            registry=reg,
        )
        self.m_approvals = Gauge(
            "gateway_pipeline_approvals_pending", "Approvals waiting for a decision", registry=reg
        )

    # -- worker loop ------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="pipelines-worker")

    async def stop(self) -> None:
        self._stopping = True
        self.wake.set()
        if self._loop_task is not None:
            # Let the current tick finish its transaction rather than cancel it mid-way.
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(self._loop_task)
            except TimeoutError:
                self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        tasks = list(self.tasks.items())
        for _run_id, task in tasks:
            task.cancel()
        await self.execution.close()  # kills step processes; none is started from now on
        for _run_id, task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._critical:
            await asyncio.gather(*self._critical, return_exceptions=True)
        # A graceful stop hands our runs back at once (a killed process leaves it to the
        # lease); they continue from their last completed step in the next process.
        if tasks:
            with contextlib.suppress(Exception):
                async with self.store.write() as conn:
                    await conn.execute(
                        runs.update()
                        .where(runs.c.status == "running", runs.c.lease_owner == self.worker_id)
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

    async def _shielded(self, coro: Awaitable[Any]) -> Any:
        """Run a store transaction to its end even if the run's task is cancelled meanwhile
        (a cancel mid-transaction would leave the connection holding the write lock)."""
        task = asyncio.ensure_future(coro)
        self._critical.add(task)
        task.add_done_callback(self._critical.discard)
        return await asyncio.shield(task)

    async def _loop(self) -> None:
        while not self._stopping:
            woken = self.wake.is_set()
            self.wake.clear()  # a wake during the tick makes the next one come at once
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
                    await self.wake.wait()

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
        if self.tasks and now_m - self._last_heartbeat > self.lease_ms / 3000:
            await self.heartbeat()
        if self.tasks and now_m - self._last_watch >= CANCEL_CHECK_SECONDS:
            await self.watch_runs()
        pending = lapsed = False
        if now_m >= self._next_poll:
            self._next_poll = now_m + self.poll_seconds
            pending, lapsed = await self._poll_store()
        if lapsed:
            await self.sweep()
            pending = True
        now = now_ms()
        if self._expiry_due_ms is not None and self._expiry_due_ms <= now:
            await self.expire_approvals()
        if (
            not self._stopping
            and self._schedule_due_ms is not None
            and (self._schedule_due_ms <= now)
        ):
            self._schedule_due_ms = await schedules.run_due(self)
        if woken or pending:
            for run_id in await self.claim():
                self.tasks[run_id] = asyncio.create_task(
                    self._execute(run_id), name=f"run:{run_id}"
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
        if self.tasks:
            due.append(self._last_heartbeat + self.lease_ms / 3000)
            due.append(self._last_watch + CANCEL_CHECK_SECONDS)
        for at_ms in (self._expiry_due_ms, self._schedule_due_ms):
            if at_ms is not None:
                due.append(now_m + (at_ms - now) / 1000)
        return min(due)

    def due_at(self, *, expiry_ms: int | None = None, schedule_ms: int | None = None) -> None:
        """Tell the loop about an approval timeout or a schedule tick stored by this
        process, so it comes due at its time rather than at the next poll."""
        if expiry_ms is not None:
            self._expiry_due_ms = min(expiry_ms, self._expiry_due_ms or expiry_ms)
        if schedule_ms is not None:
            self._schedule_due_ms = min(schedule_ms, self._schedule_due_ms or schedule_ms)
        self.wake.set()

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
        self._expiry_due_ms = None if row[2] is None else int(row[2])
        self._schedule_due_ms = None if row[3] is None else int(row[3])
        return bool(row[0]), bool(row[1])

    async def heartbeat(self) -> None:
        """Extend this worker's leases. Counted as done only once the write succeeded: one
        that failed (the store busy) is tried again at the next tick."""
        began = time.monotonic()
        mine = [r for r, t in self.tasks.items() if not t.done()]
        if not mine:
            self._last_heartbeat = began
            return
        async with self.store.write() as conn:
            await conn.execute(
                runs.update()
                .where(
                    runs.c.id.in_(mine),
                    runs.c.status == "running",
                    runs.c.lease_owner == self.worker_id,
                )
                .values(lease_expires_ms=now_ms() + self.lease_ms)
            )
            lost = await self._lost_runs(conn, mine)
        self._last_heartbeat = self._last_watch = began
        self._stop_tasks(lost)

    async def watch_runs(self) -> None:
        """Stop the steps of runs another process cancelled (or took over): one read."""
        began = time.monotonic()
        mine = [r for r, t in self.tasks.items() if not t.done()]
        lost: list[str] = []
        if mine:
            async with self.store.read() as conn:
                lost = await self._lost_runs(conn, mine)
        self._last_watch = began
        self._stop_tasks(lost)

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
                        sa.or_(runs.c.lease_owner.is_(None), runs.c.lease_owner != self.worker_id),
                    ),
                ),
            )
        )
        return [r.id for r in rows]

    def _stop_tasks(self, run_ids: Sequence[str]) -> None:
        # A run whose task ended meanwhile has left self.tasks already: nothing to stop.
        for run_id in run_ids:
            task = self.tasks.get(run_id)
            if task is not None:
                task.cancel()

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
                        lease_owner=self.worker_id,
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
        await self._notify(events)
        for pipeline_id in crashed:
            self.m_finished.labels(pipeline_id, "failed").inc()
        if crashed:
            self.wake.set()  # their slots are free for the next pending runs
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
        await _end_run(conn, row.id, "failed", error, now, lease_owner=None, lease_expires_ms=None)
        log.error("run %s failed: %s", row.id, error["message"])
        return await self.store.append_event(
            stream_of(row.id), "run.failed", {"run_id": row.id, "error": error}, conn
        )

    async def expire_approvals(self) -> None:
        now = now_ms()
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(approvals).where(
                        approvals.c.status == "pending", approvals.c.expires_ms <= now
                    )
                )
            ).all()
            self._expiry_due_ms = (
                await conn.execute(
                    sa.select(sa.func.min(approvals.c.expires_ms)).where(
                        approvals.c.status == "pending", approvals.c.expires_ms > now
                    )
                )
            ).scalar()
        for row in rows:
            decision = {"fail": None, "approve": "approved", "deny": "denied"}[row.on_timeout]
            with contextlib.suppress(GatewayError):
                await self.resolve_approval(
                    row.run_id, decision, "timeout", "approval timed out", timed_out=True
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
        self.m_approvals.set(int(pending))
        for pipeline_id in set(self.catalog.current) | {p for _s, p in counts}:
            for state in ACTIVE:
                self.m_runs.labels(state, pipeline_id).set(counts.get((state, pipeline_id), 0))

    # -- events -----------------------------------------------------------------------------

    async def _notify(self, events: list[Event]) -> None:
        for event in events:
            await self.hub.notify(event)

    async def publish(self, run_id: str, type_: str, data: dict[str, Any]) -> Event:
        """Append a step's event (delta, usage, retry) to the run's stream, fenced like
        every write of a run: only while this worker holds the run, checked in the same
        transaction, so nothing is stored after a cancel (from any process) or once
        another worker took the run over. Otherwise ``LostRun``, and the run's task is
        cancelled."""

        async def transaction() -> Event | None:
            async with self.store.write() as conn:
                held = await conn.execute(
                    sa.select(runs.c.id).where(
                        runs.c.id == run_id,
                        runs.c.status == "running",
                        runs.c.lease_owner == self.worker_id,
                    )
                )
                if held.first() is None:
                    return None
                return await self.store.append_event(
                    stream_of(run_id), type_, {"run_id": run_id, **data}, conn
                )

        event: Event | None = await self._shielded(transaction())
        if event is None:
            self._stop_tasks([run_id])
            raise LostRun(run_id)
        await self.hub.notify(event)
        return event

    async def commit(
        self,
        run_id: str,
        fn: Callable[[AsyncConnection], Awaitable[Written]],
    ) -> None:
        """Run ``fn`` in a write transaction; it returns the events to append with it.
        The events are published after the commit."""

        async def transaction() -> list[Event]:
            async with self.store.write() as conn:
                return await self._append(conn, run_id, await fn(conn))

        await self._notify(await self._shielded(transaction()))

    async def _append(self, conn: AsyncConnection, run_id: str, written: Written) -> list[Event]:
        """Append ``written`` (type, data) to the run's stream in ``conn``'s transaction;
        each event's data starts with ``run_id``."""
        return [
            await self.store.append_event(stream_of(run_id), t, {"run_id": run_id, **d}, conn)
            for t, d in written
        ]

    async def _guarded_update(self, conn: AsyncConnection, run_id: str, **values: Any) -> None:
        result = await conn.execute(
            runs.update()
            .where(
                runs.c.id == run_id,
                runs.c.status == "running",
                runs.c.lease_owner == self.worker_id,
            )
            .values(updated_ms=now_ms(), **values)
        )
        if not result.rowcount:
            raise LostRun(run_id)

    # -- creating runs ----------------------------------------------------------------------

    def validate_input(self, pipeline: Pipeline, raw: Any) -> dict[str, Any]:
        if pipeline.input_model is None:
            if not isinstance(raw, dict):
                raise GatewayError(422, "validation_failed", "input: must be a JSON object")
            return jsonable(raw)
        try:
            model = pipeline.input_model.model_validate(raw)
        except ValidationError as exc:
            message, param = validation_message(exc, "input.")
            raise GatewayError(
                422, "validation_failed", message, details={"param": param}
            ) from None
        return jsonable(model)

    async def start_run(
        self,
        pipeline: Pipeline,
        raw_input: Any,
        *,
        trigger: dict[str, Any],
        created_by: str | None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        also_matches: Sequence[str] = (),
        fingerprint: str | None = None,
    ) -> tuple[str, bool]:
        """Every way a run starts goes through here: refused while the gateway is paused
        (503), input validated against the pipeline's schema (422), then stored."""
        await self.gateway.lifecycle.require_running()
        run_input = self.validate_input(pipeline, raw_input)
        return await self.create_run(
            pipeline,
            run_input,
            trigger=trigger,
            created_by=created_by,
            owner=owner,
            idempotency_key=idempotency_key,
            also_matches=also_matches,
            fingerprint=fingerprint,
        )

    async def create_run(
        self,
        pipeline: Pipeline,
        run_input: dict[str, Any],
        *,
        trigger: dict[str, Any],
        created_by: str | None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        also_matches: Sequence[str] = (),
        fingerprint: str | None = None,
    ) -> tuple[str, bool]:
        """Store a new pending run; with an idempotency key (stored form, see
        ``idempotency.py``) an existing run with it, or with one of ``also_matches`` (older
        forms of the same key), is returned instead, unless it was stored with another
        ``fingerprint`` (of the request): 422 ``idempotency_key_reused``, nothing stored.
        Returns ``(run_id, created)``."""
        run_id = uuid.uuid4().hex
        now = now_ms()
        event: Event | None = None
        definition = self.catalog.definition_of(pipeline)
        async with self.store.write() as conn:
            if idempotency_key is not None:
                existing = (
                    await conn.execute(
                        sa.select(runs.c.id, runs.c.idempotency_fingerprint)
                        .where(
                            runs.c.pipeline_id == pipeline.id,
                            runs.c.idempotency_key.in_([idempotency_key, *also_matches]),
                        )
                        .limit(1)
                    )
                ).first()
                if existing is not None:
                    _same_request(existing, idempotency_key, fingerprint)
                    return str(existing.id), False
            digest = definition.digest
            if digest is not None and definition.text is not None:
                if digest not in self._stored_sources:
                    await conn.execute(
                        self.store.dialect.insert_ignore(definition_sources).values(
                            digest=digest,
                            path=definition.path or definition.source,
                            source=definition.text,
                            created_ms=now,
                        )
                    )
            await conn.execute(
                runs.insert().values(
                    id=run_id,
                    pipeline_id=pipeline.id,
                    pipeline_version=pipeline.version,
                    definition_key=definition_key(pipeline, definition.fingerprint),
                    definition=definition.record(pipeline),
                    status="pending",
                    input=run_input,
                    cursor=0,
                    results={},
                    resolutions={},
                    trigger=trigger,
                    idempotency_key=idempotency_key,
                    idempotency_fingerprint=fingerprint,
                    created_by=created_by,
                    owner=owner,
                    created_ms=now,
                    updated_ms=now,
                    claims=0,
                )
            )
            event = await self.store.append_event(
                stream_of(run_id),
                "run.created",
                {"run_id": run_id, "pipeline_id": pipeline.id, "trigger": trigger},
                conn,
            )
        if definition.digest is not None:
            self._stored_sources.add(definition.digest)
        await self.hub.notify(event)
        self.wake.set()
        return run_id, True

    # -- executing --------------------------------------------------------------------------

    async def _execute(self, run_id: str) -> None:
        try:
            await self._advance(run_id)
        except LostRun:
            pass
        except BaseException as exc:  # user code's SystemExit must not end us
            if isinstance(exc, asyncio.CancelledError) and execution.engine_cancel(exc):
                return
            log.exception("run %s crashed in the engine", run_id)
            with contextlib.suppress(Exception):
                await self._fail(run_id, {"message": "internal engine error"}, [])
        finally:
            self.tasks.pop(run_id, None)
            self.wake.set()

    async def _advance(self, run_id: str) -> None:
        async with self.store.read() as conn:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                return
            journal = await _journal_of(conn, run_id)
            changed = ""
            try:
                pipeline = await self.definition_for(conn, row)
            except DefinitionChanged as exc:
                pipeline, changed = None, str(exc)
        if pipeline is None:
            await self._fail(run_id, {"code": "definition_changed", "message": changed}, [])
            return
        results: dict[str, Any] = dict(row.results or {})
        resolutions: dict[str, Any] = dict(row.resolutions or {})
        released = row.released_step
        cursor = int(row.cursor)
        steps = list(pipeline.steps)
        while cursor < len(steps):
            step = steps[cursor]
            # A step that already started (it waits, or its process died) is not re-tested.
            if released != step.id and step.id not in journal:
                hit = await self._breakpoint_at(pipeline.id, step.id, step.id)
                if hit is not None:
                    await self._pause(run_id, step.id, hit)
                    return
            ctx = StepContext(
                self,
                run_id,
                pipeline,
                dict(row.input),
                results,
                step,
                resolutions.get(step.id),
                path=step.id,
                resolutions=resolutions,
                journal=journal,
                released=released,
            )
            started = now_ms()
            # A step that already started (it waits, or its process died) is not re-tested.
            if (
                step.when is not None
                and step.id not in journal
                and not execution.call_user(step.when, ctx)
            ):
                await self._record(ctx, "skipped", None, None, 0, started, cursor + 1)
                cursor += 1
                continue
            try:
                output, attempts = await self.run_step(ctx)
            except Suspend as suspend:
                if suspend.waiting_for.get("type") == "breakpoint":  # at a nested step
                    waiting = suspend.waiting_for
                    await self._pause(run_id, waiting["step"], waiting["breakpoint"])
                else:
                    await self._suspend(run_id, pipeline, suspend.waiting_for)
                return
            except _StepFailed as failure:
                self.m_step.labels(pipeline.id, step.kind, "failed").observe(
                    (now_ms() - started) / 1000
                )
                if step.continue_on_error:
                    results[step.id] = {"error": failure.message}
                    await self._record(
                        ctx,
                        "failed",
                        None,
                        failure.message,
                        failure.attempts,
                        started,
                        cursor + 1,
                    )
                    cursor += 1
                    released = None
                    continue
                error = {"message": failure.message, "step": step.id}
                if failure.path is not None:
                    error["path"] = failure.path
                await self._fail(
                    run_id,
                    error,
                    [("step.failed", {"step": step.id, "error": failure.message})],
                    step_row=(ctx, failure.attempts, started, failure.message),
                )
                return
            self.m_step.labels(pipeline.id, step.kind, "completed").observe(
                (now_ms() - started) / 1000
            )
            results[step.id] = output
            await self._record(ctx, "completed", output, None, attempts, started, cursor + 1)
            cursor += 1
            released = None
        await self._complete(run_id, pipeline, dict(row.input), results)

    async def definitions_in_use(self) -> set[str]:
        """The definition keys of the runs not finished yet, whichever process runs them:
        what a reload must keep (``PipelineCatalog.load``)."""
        query = sa.select(runs.c.definition_key).where(runs.c.status.not_in(TERMINAL)).distinct()
        async with self.store.read() as conn:
            return {str(key) for key in (await conn.execute(query)).scalars()}

    async def definition_for(self, conn: AsyncConnection, row: Any) -> Pipeline:
        """The definition the run started with: the one this process loaded, or one
        rebuilt from its stored module source. ``DefinitionChanged`` when it cannot be had
        (a plugin now registers another definition, or the stored source no longer loads)."""
        record = row.definition
        if not record:  # a run stored before definitions were recorded
            found = self.catalog.for_run(row.pipeline_id, row.definition_key)
            if found is None:
                raise DefinitionChanged(f"pipeline {row.pipeline_id!r} is no longer defined")
            return found
        known = self.catalog.by_key.get(row.definition_key)
        if known is not None:
            return known
        started = f"version {record.get('version')!r} ({record.get('fingerprint')})"
        if record.get("origin") == "directory":
            digest = str(record.get("fingerprint", "")).removeprefix("sha256:")
            stored = (
                await conn.execute(
                    sa.select(definition_sources).where(definition_sources.c.digest == digest)
                )
            ).first()
            if stored is None:
                raise DefinitionChanged(
                    f"pipeline {row.pipeline_id!r} changed since this run started with "
                    f"{started}, and that definition's stored source is missing"
                )
            try:
                pipeline = self.catalog.rebuild(row.pipeline_id, record, stored.source, stored.path)
            except BaseException as exc:  # the module's own sys.exit() too
                raise DefinitionChanged(
                    f"pipeline {row.pipeline_id!r} changed since this run started with "
                    f"{started}, and that definition could not be rebuilt from its stored "
                    f"source ({record.get('source')}): {type(exc).__name__}: {exc}"
                ) from None
            log.info("run %s continues with its stored definition, %s", row.id, started)
            return pipeline
        current = self.catalog.current.get(row.pipeline_id)
        now = (
            "no definition"
            if current is None
            else f"version {current.version!r} ({self.catalog.definition_of(current).fingerprint})"
        )
        raise DefinitionChanged(
            f"pipeline {row.pipeline_id!r} changed since this run started with {started}; "
            f"this gateway has {now}. A definition registered by a plugin cannot be rebuilt, "
            "so the run stops rather than run different steps"
        )

    async def run_step(self, ctx: StepContext) -> tuple[Any, int]:
        step = ctx.step
        kind = self.gateway.registry("step_kinds").get(step.kind)
        path = ctx.step_path
        if kind is None:
            await self.publish(ctx.run_id, "step.started", {"step": path, "kind": step.kind})
            raise _StepFailed(f"unknown step kind {step.kind!r}", 1)
        for attempt in range(step.retries + 1):
            await self._attempt_started(ctx, first=attempt == 0)
            try:
                output = await execution.attempt(kind, step, ctx)
                return step_output(output), attempt + 1
            except (Suspend, LostRun, _StepFailed):
                raise
            except StepError as exc:
                raise _StepFailed(str(exc), attempt + 1) from None
            except BaseException as exc:  # a step's SystemExit is its failure
                if execution.engine_cancel(exc):
                    raise
                message = execution.failure_message(exc)
                if attempt >= step.retries:
                    raise _StepFailed(message, attempt + 1) from None
                delay = step.backoff_seconds * (2**attempt)
                await self.publish(
                    ctx.run_id,
                    "step.retry",
                    {
                        "step": path,
                        "attempt": attempt + 1,
                        "error": message,
                        "delay_seconds": delay,
                    },
                )
                await asyncio.sleep(delay)
        raise _StepFailed("no attempt made", 0)  # pragma: no cover - loop always returns

    async def _attempt_started(self, ctx: StepContext, first: bool) -> None:
        """Count the attempt in the journal before it runs (so a re-run after a crash
        sees ``attempt`` grow) and, for the first attempt, publish ``step.started``."""
        path = ctx.step_path
        entry = ctx.journal.get(path) or {}
        attempts = int(entry.get("attempts") or 0) + 1
        ctx.attempt = attempts
        ctx.journal[path] = {"status": "running", "attempts": attempts}
        started = now_ms()

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(conn, ctx.run_id)
            await conn.execute(
                self._journal_upsert(ctx.run_id, path, "running", attempts, None, None, started)
            )
            if not first:
                return []
            return [("step.started", {"step": path, "kind": ctx.step.kind, "attempt": attempts})]

        await self.commit(ctx.run_id, write)

    def _journal_upsert(
        self,
        run_id: str,
        path: str,
        status: str,
        attempts: int,
        output: Any,
        error: str | None,
        started: int,
        finished: int | None = None,
    ) -> Any:
        return self.store.dialect.upsert(
            step_journal,
            ["run_id", "path"],
            {
                "run_id": run_id,
                "path": path,
                "status": status,
                "attempts": attempts,
                "output": output,
                "error": error,
                "started_ms": started,
                "finished_ms": finished,
            },
        )

    async def decide(self, ctx: StepContext, path: str, compute: Callable[[], Any]) -> Any:
        entry = ctx.journal.get(path)
        if entry is not None and entry.get("status") == "decided":
            return entry.get("output")
        value = jsonable(compute())
        ctx.journal[path] = {"status": "decided", "attempts": 0, "output": value}
        now = now_ms()

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(conn, ctx.run_id)
            await conn.execute(
                self._journal_upsert(ctx.run_id, path, "decided", 0, value, None, now, now)
            )
            return []

        await self.commit(ctx.run_id, write)
        return value

    async def run_nested(
        self, parent: StepContext, steps: list[Step], scope: str = ""
    ) -> dict[str, Any]:
        """Run nested steps in order. A step the journal holds as finished is replayed
        from it (its stored output; a stored failure fails again), not run again; an
        approval or wait step suspends the whole run (``Suspend`` goes up to the run)."""
        outputs: dict[str, Any] = {}
        base = f"{parent.step_path}{scope}"
        for step in steps:
            path = f"{base}.{step.id}"
            entry = parent.journal.get(path)
            if entry is not None and entry.get("status") in FINISHED_STEP:
                if entry["status"] == "skipped":
                    continue
                if entry["status"] == "failed" and not step.continue_on_error:
                    raise _StepFailed(str(entry.get("error")), int(entry["attempts"]), path)
                output = entry.get("output")
            else:
                await self._nested_breakpoint(parent, step, path)
                output = await self._run_nested_step(parent, step, path)
                if output is _SKIPPED:
                    continue
            parent.results[step.id] = output
            outputs[step.id] = output
        return outputs

    async def _nested_breakpoint(self, parent: StepContext, step: Step, path: str) -> None:
        """Pause the run before a nested step that has not started yet when a breakpoint
        names its id or its path: a ``Suspend`` that goes up like an approval's (so in a
        ``parallel`` step the other branches go on to their end or their own stop first),
        and which the run turns into ``paused``."""
        if path in parent.journal or parent.released == path:
            return
        hit = await self._breakpoint_at(parent.pipeline.id, step.id, path)
        if hit is not None:
            raise Suspend({"type": "breakpoint", "step": path, "breakpoint": hit})

    async def _run_nested_step(self, parent: StepContext, step: Step, path: str) -> Any:
        ctx = StepContext(
            self,
            parent.run_id,
            parent.pipeline,
            parent.input,
            parent.results,
            step,
            parent.resolutions.get(path),
            parent.iteration,
            True,
            path=path,
            resolutions=parent.resolutions,
            journal=parent.journal,
            released=parent.released,
        )
        started = now_ms()
        if (
            step.when is not None
            and path not in parent.journal
            and not execution.call_user(step.when, ctx)
        ):
            await self._record_nested(ctx, "skipped", None, None, 0, started)
            return _SKIPPED
        try:
            output, attempts = await self.run_step(ctx)
        except _StepFailed as failure:
            self.m_step.labels(parent.pipeline.id, step.kind, "failed").observe(
                (now_ms() - started) / 1000
            )
            if not step.continue_on_error:
                if failure.path is None:  # a failure of this step, not of one inside it
                    failure.path = path
                    await self._record_nested(
                        ctx, "failed", None, failure.message, failure.attempts, started
                    )
                raise
            output = {"error": failure.message}
            await self._record_nested(
                ctx, "failed", output, failure.message, failure.attempts, started
            )
            return output
        self.m_step.labels(parent.pipeline.id, step.kind, "completed").observe(
            (now_ms() - started) / 1000
        )
        await self._record_nested(ctx, "completed", output, None, attempts, started)
        return output

    async def _record_nested(
        self,
        ctx: StepContext,
        status: str,
        output: Any,
        error: str | None,
        attempts: int,
        started: int,
    ) -> None:
        """Store a nested step's outcome (journal and step results) with its event."""
        path = ctx.step_path
        total = int((ctx.journal.get(path) or {}).get("attempts") or 0)
        ctx.journal[path] = {
            "status": status,
            "attempts": total,
            "output": output,
            "error": error,
        }

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(conn, ctx.run_id, stalled_claims=0)
            return await self._store_outcome(
                conn, ctx, path, status, attempts, output, error, started, total, output
            )

        await self.commit(ctx.run_id, write)

    async def _store_outcome(
        self,
        conn: AsyncConnection,
        ctx: StepContext,
        path: str,
        status: str,
        attempts: int,
        output: Any,
        error: str | None,
        started: int,
        total_attempts: int,
        journal_output: Any,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Write a finished step's result row and journal entry (top-level or nested,
        ``path`` names it); returns its event (step.completed, .failed or .skipped)."""
        finished = now_ms()
        await conn.execute(
            step_results.insert().values(
                run_id=ctx.run_id,
                step_id=path,
                status=status,
                attempts=attempts,
                output=output if status == "completed" else None,
                error=error,
                started_ms=started,
                finished_ms=finished,
            )
        )
        await conn.execute(
            self._journal_upsert(
                ctx.run_id, path, status, total_attempts, journal_output, error, started, finished
            )
        )
        data: dict[str, Any] = {"step": path, "attempts": attempts}
        if status == "completed":
            data["output"] = output
        if error is not None:
            data["error"] = error
            data["continued"] = ctx.step.continue_on_error
        event = {"completed": "step.completed", "failed": "step.failed"}.get(status, "step.skipped")
        return [(event, data)]

    async def _breakpoint_at(self, pipeline_id: str, step_id: str, path: str) -> str | None:
        """The breakpoint (its ``step_id``) that names this step by id or by path."""
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(breakpoints.c.step_id)
                    .where(
                        breakpoints.c.step_id.in_({step_id, path}),
                        sa.or_(
                            breakpoints.c.pipeline_id.is_(None),
                            breakpoints.c.pipeline_id == pipeline_id,
                        ),
                    )
                    .limit(1)
                )
            ).first()
        return None if row is None else str(row.step_id)

    async def _record(
        self,
        ctx: StepContext,
        status: str,
        output: Any,
        error: str | None,
        attempts: int,
        started: int,
        cursor: int,
    ) -> None:
        """Store a top-level step's outcome, the run's new cursor and results, and its
        journal entry, with its event."""
        run_id, step = ctx.run_id, ctx.step
        total = int((ctx.journal.get(step.id) or {}).get("attempts") or 0)
        kept = {"error": error} if status == "failed" else output
        ctx.journal[step.id] = {"status": status, "attempts": total, "output": kept}

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(
                conn,
                run_id,
                cursor=cursor,
                results=ctx.results,
                released_step=None,
                stalled_claims=0,
            )
            return await self._store_outcome(
                conn, ctx, step.id, status, attempts, output, error, started, total, kept
            )

        await self.commit(run_id, write)

    async def _suspend(self, run_id: str, pipeline: Pipeline, waiting_for: dict[str, Any]) -> None:
        now = now_ms()
        waiting_for = {**waiting_for, "since_ms": now}

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(
                conn,
                run_id,
                status="waiting",
                waiting_for=waiting_for,
                lease_owner=None,
                lease_expires_ms=None,
                stalled_claims=0,
            )
            events: list[tuple[str, dict[str, Any]]] = []
            if waiting_for["type"] == "approval":
                timeout = waiting_for.get("timeout_seconds")
                await conn.execute(
                    self.store.dialect.upsert(
                        approvals,
                        ["run_id", "step_id"],
                        {
                            "run_id": run_id,
                            "step_id": waiting_for["step"],
                            "pipeline_id": pipeline.id,
                            "status": "pending",
                            "message": waiting_for.get("message", ""),
                            "requested_ms": now,
                            "expires_ms": now + int(timeout * 1000) if timeout else None,
                            "on_timeout": waiting_for.get("on_timeout", "fail"),
                            "resolved_ms": None,
                            "approver": None,
                            "reason": None,
                        },
                    )
                )
                events.append(("approval.requested", {"step": waiting_for["step"], **waiting_for}))
            events.append(("run.waiting", {"waiting_for": waiting_for}))
            return events

        await self.commit(run_id, write)
        timeout = waiting_for.get("timeout_seconds") if waiting_for["type"] == "approval" else None
        if timeout:
            self.due_at(expiry_ms=now + int(timeout * 1000))

    async def _pause(self, run_id: str, step_id: str, breakpoint: str) -> None:
        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(
                conn,
                run_id,
                status="paused",
                paused_at=step_id,
                lease_owner=None,
                lease_expires_ms=None,
                stalled_claims=0,
            )
            return [
                ("run.paused", {"step": step_id, "reason": "breakpoint", "breakpoint": breakpoint})
            ]

        await self.commit(run_id, write)

    async def _fail(
        self,
        run_id: str,
        error: dict[str, Any],
        extra: list[tuple[str, dict[str, Any]]],
        step_row: tuple[StepContext, int, int, str] | None = None,
    ) -> None:
        pipeline_id = ""

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            nonlocal pipeline_id
            await self._guarded_update(
                conn,
                run_id,
                status="failed",
                error=error,
                finished_ms=now_ms(),
                lease_owner=None,
                lease_expires_ms=None,
            )
            pipeline_id = str(
                (
                    await conn.execute(sa.select(runs.c.pipeline_id).where(runs.c.id == run_id))
                ).scalar_one()
            )
            if step_row is not None:
                ctx, attempts, started, message = step_row
                finished = now_ms()
                await conn.execute(
                    step_results.insert().values(
                        run_id=run_id,
                        step_id=ctx.step.id,
                        status="failed",
                        attempts=attempts,
                        output=None,
                        error=message,
                        started_ms=started,
                        finished_ms=finished,
                    )
                )
                total = int((ctx.journal.get(ctx.step.id) or {}).get("attempts") or 0)
                await conn.execute(
                    self._journal_upsert(
                        run_id, ctx.step.id, "failed", total, None, message, started, finished
                    )
                )
            return [*extra, ("run.failed", {"error": error})]

        await self.commit(run_id, write)
        self.m_finished.labels(pipeline_id, "failed").inc()

    async def _complete(
        self, run_id: str, pipeline: Pipeline, run_input: dict[str, Any], results: dict[str, Any]
    ) -> None:
        last = pipeline.steps[-1].id
        ctx = StepContext(self, run_id, pipeline, run_input, results, pipeline.steps[-1])
        output = pipeline.output(ctx) if pipeline.output is not None else results.get(last)
        if pipeline.output_model is not None:
            try:
                output = pipeline.output_model.model_validate(output)
            except ValidationError as exc:
                message, _ = validation_message(exc, "output.")
                await self._fail(
                    run_id, {"message": f"output does not match the schema: {message}"}, []
                )
                return
        try:
            output = strict_jsonable(output)
        except NotJSON as exc:
            await self._fail(run_id, {"message": f"run output is not JSON: {exc}"}, [])
            return

        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(
                conn,
                run_id,
                status="completed",
                output=output,
                finished_ms=now_ms(),
                lease_owner=None,
                lease_expires_ms=None,
                waiting_for=None,
            )
            return [("run.completed", {"output": output})]

        await self.commit(run_id, write)
        self.m_finished.labels(pipeline.id, "completed").inc()

    # -- operator actions (routes) -----------------------------------------------------------

    async def _operator_write(
        self,
        run_id: str,
        write: Callable[[AsyncConnection, Any], Awaitable[Written]],
        committed: Callable[[Any], None] | None = None,
    ) -> None:
        """An operator action on a run (approve, resume, release, cancel): in one write
        transaction, ``write(conn, row)`` checks the run's row (404 unknown run) and
        changes the store, returning the events to append with it; once committed,
        ``committed(row)`` runs, then the events are published and the worker is woken."""
        async with self.store.write() as conn:
            row = await run_row(conn, run_id)
            events = await self._append(conn, run_id, await write(conn, row))
        if committed is not None:
            committed(row)
        await self._notify(events)
        self.wake.set()

    async def resolve_approval(
        self,
        run_id: str,
        decision: str | None,
        approver: str,
        reason: str | None,
        timed_out: bool = False,
    ) -> None:
        """Approve (``approved``), deny (``denied``) or, with ``None``, fail a run waiting
        at an approval gate. 404 unknown run; 409 not waiting for approval."""
        now = now_ms()
        status = decision or "timed_out"

        async def write(conn: AsyncConnection, row: Any) -> Written:
            step_id = _waiting_step(row, "approval", "an approval")
            await conn.execute(
                approvals.update()
                .where(approvals.c.run_id == run_id, approvals.c.step_id == step_id)
                .values(status=status, resolved_ms=now, approver=approver, reason=reason)
            )
            resolved = (
                "approval.resolved",
                {
                    "step": step_id,
                    "decision": status,
                    "approver": approver,
                    "reason": reason,
                    "timed_out": timed_out,
                },
            )
            if decision is not None:
                resolution = {
                    "decision": decision,
                    "approver": approver,
                    "reason": reason,
                    "at_ms": now,
                }
                return [
                    resolved,
                    await self._resumed(conn, row, step_id, resolution, approver, now),
                ]
            error = {"message": f"approval {step_id!r} timed out", "step": step_id}
            await _end_run(conn, run_id, "failed", error, now)
            return [resolved, ("run.failed", {"error": error})]

        def failed(row: Any) -> None:  # counted once the failure is stored
            self.m_finished.labels(row.pipeline_id, "failed").inc()

        await self._operator_write(run_id, write, failed if decision is None else None)

    async def _resumed(
        self,
        conn: AsyncConnection,
        row: Any,
        step_id: str,
        resolution: dict[str, Any],
        by: str,
        now: int,
    ) -> tuple[str, dict[str, Any]]:
        """Store how a waiting step was resolved and queue the run again (its worker
        continues at that step); returns the ``run.resumed`` event to append."""
        resolutions = {**(row.resolutions or {}), step_id: resolution}
        await conn.execute(
            runs.update()
            .where(runs.c.id == row.id)
            .values(status="pending", waiting_for=None, resolutions=resolutions, updated_ms=now)
        )
        return "run.resumed", {"step": step_id, "by": by}

    async def resume(self, run_id: str, raw_input: Any, by: str) -> None:
        """Give a run waiting at a ``wait`` step its input (validated against the step's
        schema: 422 naming the field, and the run still waits)."""
        now = now_ms()

        async def write(conn: AsyncConnection, row: Any) -> Written:
            step_id = _waiting_step(row, "input", "input")
            try:
                pipeline: Pipeline | None = await self.definition_for(conn, row)
            except DefinitionChanged:
                pipeline = None  # the run fails with definition_changed when it goes on
            # A nested step's path ends with its id (``count[1].reply``).
            step = pipeline.step(step_id.rsplit(".", 1)[-1]) if pipeline is not None else None
            schema = step.config.get("schema") if step is not None else None
            value = raw_input
            if schema is not None:
                try:
                    value = jsonable(schema.model_validate(raw_input))
                except ValidationError as exc:
                    message, param = validation_message(exc, "input.")
                    raise GatewayError(
                        422, "validation_failed", message, details={"param": param}
                    ) from None
            resolution = {"input": value, "by": by, "at_ms": now}
            return [await self._resumed(conn, row, step_id, resolution, by, now)]

        await self._operator_write(run_id, write)

    async def release(self, run_id: str, by: str) -> None:
        async def write(conn: AsyncConnection, row: Any) -> Written:
            if row.status != "paused":
                raise GatewayError(409, "not_paused", f"run {run_id} is {row.status}, not paused")
            await conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status="pending",
                    released_step=row.paused_at,
                    paused_at=None,
                    updated_ms=now_ms(),
                )
            )
            return [("run.released", {"step": row.paused_at, "by": by})]

        await self._operator_write(run_id, write)

    async def cancel(self, run_id: str, by: str, reason: str | None) -> None:
        now = now_ms()

        async def write(conn: AsyncConnection, row: Any) -> Written:
            if row.status in TERMINAL:
                raise GatewayError(409, "run_finished", f"run {run_id} is already {row.status}")
            error = {"message": "cancelled", "by": by, "reason": reason}
            await _end_run(
                conn, run_id, "cancelled", error, now, lease_owner=None, lease_expires_ms=None
            )
            await conn.execute(
                approvals.update()
                .where(approvals.c.run_id == run_id, approvals.c.status == "pending")
                .values(status="cancelled", resolved_ms=now)
            )
            return [("run.cancelled", {"by": by, "reason": reason})]

        def cancelled(row: Any) -> None:
            task = self.tasks.get(run_id)
            if task is not None:
                task.cancel()
            self.m_finished.labels(row.pipeline_id, "cancelled").inc()

        await self._operator_write(run_id, write, cancelled)


class _StepFailed(Exception):
    def __init__(self, message: str, attempts: int, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        self.path = path  # the nested step that failed, if it was one


_SKIPPED = object()


async def _journal_of(conn: AsyncConnection, run_id: str) -> dict[str, dict[str, Any]]:
    rows = await conn.execute(sa.select(step_journal).where(step_journal.c.run_id == run_id))
    return {
        r.path: {"status": r.status, "attempts": r.attempts, "output": r.output, "error": r.error}
        for r in rows
    }


async def _end_run(
    conn: AsyncConnection, run_id: str, status: str, error: Any, now: int, **values: Any
) -> None:
    """Store an operator action's end of a run (``failed``, ``cancelled``)."""
    await conn.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            status=status,
            error=error,
            waiting_for=None,
            finished_ms=now,
            updated_ms=now,
            **values,
        )
    )


def _same_request(existing: Any, key: str, fingerprint: str | None) -> None:
    """422 ``idempotency_key_reused`` when the run found by ``key`` was started by another
    request (a run stored before fingerprints were, or without one, matches any)."""
    stored = existing.idempotency_fingerprint
    if fingerprint is None or stored is None or stored == fingerprint:
        return
    raise GatewayError(
        422,
        "idempotency_key_reused",
        f"Idempotency-Key {shown(key)!r} was already used with another input for this "
        f"pipeline (run {existing.id}); send a new key for a new request",
        details={"idempotency_key": shown(key), "run_id": str(existing.id)},
    )


def _waiting_step(row: Any, kind: str, what: str) -> str:
    """The step the run waits at, or 409 ``not_waiting_for_<kind>``."""
    waiting = row.waiting_for or {}
    if row.status != "waiting" or waiting.get("type") != kind:
        raise GatewayError(
            409, f"not_waiting_for_{kind}", f"run {row.id} is {row.status}, not waiting for {what}"
        )
    step: str = waiting["step"]
    return step


def engine_of(app: Quart | None = None) -> Engine:
    engine: Engine | None = context(app).extras.get(ENGINE_KEY)
    if engine is None:
        raise GatewayError(503, "pipelines_not_ready", "the pipelines engine is not running")
    return engine
