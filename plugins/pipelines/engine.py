"""The durable run engine.

Every state change is written with its event in one store transaction, and the event is
published (``EventHub.notify``) only after the commit. A worker (one per gateway
process) claims ``pending`` runs in creation order, up to the concurrency limit counted
over the whole store, and holds a lease on each (``lease_owner``/``lease_expires_ms``)
that it renews by heartbeat; a run whose lease lapsed (its process died) is re-queued and
continues from its last completed step. A run's ``cursor`` is the index of the next
top-level step; ``results`` holds every completed step's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError
from quart import Quart
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Event, GatewayContext, GatewayError, context
from host.errors import validation_message
from host.storage import now_ms
from plugins.pipelines import schedules
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.definition import Pipeline, Step
from plugins.pipelines.kinds import StepError, Suspend
from plugins.pipelines.tables import approvals, breakpoints, runs, step_results

log = logging.getLogger("gateway.pipelines")

TERMINAL = ("completed", "failed", "cancelled")
STATES = ("pending", "running", "waiting", "paused", *TERMINAL)
TERMINAL_EVENTS = ("run.completed", "run.failed", "run.cancelled")
ENGINE_KEY = "pipelines.engine"


def stream_of(run_id: str) -> str:
    return f"run:{run_id}"


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str))


class LostRun(Exception):
    """The run is no longer ours to advance (cancelled, or our lease lapsed)."""


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

    @property
    def gateway(self) -> GatewayContext:
        return self.engine.gateway

    async def delta(self, text: str) -> None:
        """Publish a ``step.delta`` event (token streaming)."""
        await self.engine.publish(self.run_id, "step.delta", {"step": self.step.id, "text": text})

    async def run_steps(self, steps: list[Step]) -> dict[str, Any]:
        """Run nested steps in order (branch, parallel, loop); returns their outputs."""
        return await self.engine.run_nested(self, steps)


class Engine:
    def __init__(self, app: Quart, catalog: PipelineCatalog, section: dict[str, Any]) -> None:
        self.app = app
        self.gateway = context(app)
        self.store = self.gateway.store
        self.hub = self.gateway.hub
        self.catalog = catalog
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.max_concurrent = int(section.get("max_concurrent_runs", 4))
        self.lease_ms = int(float(section.get("lease_seconds", 15)) * 1000)
        self.poll_seconds = float(section.get("poll_seconds", 0.5))
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_heartbeat = 0.0
        self._critical: set[asyncio.Future[Any]] = set()
        self._init_metrics()

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
                        .values(status="pending", lease_owner=None, lease_expires_ms=None)
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
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("pipelines worker tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self.wake.wait()
            self.wake.clear()

    async def tick(self) -> None:
        if time.monotonic() - self._last_heartbeat > self.lease_ms / 3000:
            await self.heartbeat()
        await self.sweep()
        await self.expire_approvals()
        if not self._stopping:
            await schedules.run_due(self)
        for run_id in await self.claim():
            self.tasks[run_id] = asyncio.create_task(self._execute(run_id), name=f"run:{run_id}")
        await self.update_gauges()

    async def heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        mine = [r for r, t in self.tasks.items() if not t.done()]
        if not mine:
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
            held = await conn.execute(
                sa.select(runs.c.id).where(
                    runs.c.id.in_(mine),
                    runs.c.status == "running",
                    runs.c.lease_owner == self.worker_id,
                )
            )
            still = {r.id for r in held}
        for run_id in mine:
            if run_id not in still:  # cancelled elsewhere, or the lease went to another
                self.tasks[run_id].cancel()

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
                    sa.select(runs.c.id, runs.c.claims, runs.c.cursor)
                    .where(runs.c.status == "pending")
                    .order_by(runs.c.n)
                    .limit(room)
                )
            )
            now = now_ms()
            for row in rows.all():
                await conn.execute(
                    runs.update()
                    .where(runs.c.id == row.id)
                    .values(
                        status="running",
                        lease_owner=self.worker_id,
                        lease_expires_ms=now + self.lease_ms,
                        claims=row.claims + 1,
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
        return claimed

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
        for row in rows:
            decision = {"fail": None, "approve": "approved", "deny": "denied"}[row.on_timeout]
            with contextlib.suppress(GatewayError):
                await self.resolve_approval(
                    row.run_id, decision, "timeout", "approval timed out", timed_out=True
                )

    async def update_gauges(self) -> None:
        async with self.store.read() as conn:
            rows = await conn.execute(
                sa.select(runs.c.status, runs.c.pipeline_id, sa.func.count())
                .where(runs.c.status.in_(("pending", "running", "waiting", "paused")))
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
            for state in ("pending", "running", "waiting", "paused"):
                self.m_runs.labels(state, pipeline_id).set(counts.get((state, pipeline_id), 0))

    # -- events -----------------------------------------------------------------------------

    async def _notify(self, events: list[Event]) -> None:
        for event in events:
            await self.hub.notify(event)

    async def publish(self, run_id: str, type_: str, data: dict[str, Any]) -> Event:
        event: Event = await self._shielded(
            self.store.append_event(stream_of(run_id), type_, {"run_id": run_id, **data})
        )
        await self.hub.notify(event)
        return event

    async def commit(
        self,
        run_id: str,
        fn: Callable[[AsyncConnection], Awaitable[list[tuple[str, dict[str, Any]]]]],
    ) -> None:
        """Run ``fn`` in a write transaction; it returns the events to append with it.
        The events are published after the commit."""

        async def transaction() -> list[Event]:
            async with self.store.write() as conn:
                pairs = await fn(conn)
                return [
                    await self.store.append_event(
                        stream_of(run_id), t, {"run_id": run_id, **d}, conn
                    )
                    for t, d in pairs
                ]

        await self._notify(await self._shielded(transaction()))

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

    async def create_run(
        self,
        pipeline: Pipeline,
        run_input: dict[str, Any],
        *,
        trigger: dict[str, Any],
        created_by: str | None,
        idempotency_key: str | None = None,
    ) -> tuple[str, bool]:
        """Store a new pending run; with an idempotency key an existing run is returned
        instead. Returns ``(run_id, created)``."""
        run_id = uuid.uuid4().hex
        now = now_ms()
        event: Event | None = None
        async with self.store.write() as conn:
            if idempotency_key is not None:
                existing = (
                    await conn.execute(
                        sa.select(runs.c.id).where(
                            runs.c.pipeline_id == pipeline.id,
                            runs.c.idempotency_key == idempotency_key,
                        )
                    )
                ).scalar_one_or_none()
                if existing is not None:
                    return str(existing), False
            await conn.execute(
                runs.insert().values(
                    id=run_id,
                    pipeline_id=pipeline.id,
                    pipeline_version=pipeline.version,
                    definition_key=self.catalog.keys.get(pipeline.id, pipeline.id),
                    status="pending",
                    input=run_input,
                    cursor=0,
                    results={},
                    resolutions={},
                    trigger=trigger,
                    idempotency_key=idempotency_key,
                    created_by=created_by,
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
        await self.hub.notify(event)
        self.wake.set()
        return run_id, True

    # -- executing --------------------------------------------------------------------------

    async def _execute(self, run_id: str) -> None:
        try:
            await self._advance(run_id)
        except (LostRun, asyncio.CancelledError):
            pass
        except Exception:
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
        pipeline = self.catalog.for_run(row.pipeline_id, row.definition_key)
        if pipeline is None:
            await self._fail(
                run_id, {"message": f"pipeline {row.pipeline_id!r} is no longer defined"}, []
            )
            return
        results: dict[str, Any] = dict(row.results or {})
        resolutions: dict[str, Any] = dict(row.resolutions or {})
        released = row.released_step
        cursor = int(row.cursor)
        steps = list(pipeline.steps)
        while cursor < len(steps):
            step = steps[cursor]
            if released != step.id and await self._breakpoint_at(pipeline.id, step.id):
                await self._pause(run_id, step.id)
                return
            ctx = StepContext(
                self, run_id, pipeline, dict(row.input), results, step, resolutions.get(step.id)
            )
            started = now_ms()
            if step.when is not None and not step.when(ctx):
                await self._record(
                    run_id, step, "skipped", None, None, 0, started, cursor + 1, results
                )
                cursor += 1
                continue
            try:
                output, attempts = await self.run_step(ctx)
            except Suspend as suspend:
                await self._suspend(run_id, pipeline, suspend.waiting_for)
                return
            except _StepFailed as failure:
                self.m_step.labels(pipeline.id, step.kind, "failed").observe(
                    (now_ms() - started) / 1000
                )
                if step.continue_on_error:
                    results[step.id] = {"error": failure.message}
                    await self._record(
                        run_id,
                        step,
                        "failed",
                        None,
                        failure.message,
                        failure.attempts,
                        started,
                        cursor + 1,
                        results,
                    )
                    cursor += 1
                    released = None
                    continue
                await self._fail(
                    run_id,
                    {"message": failure.message, "step": step.id},
                    [("step.failed", {"step": step.id, "error": failure.message})],
                    step_row=(step, failure.attempts, started, failure.message),
                )
                return
            self.m_step.labels(pipeline.id, step.kind, "completed").observe(
                (now_ms() - started) / 1000
            )
            results[step.id] = output
            await self._record(
                run_id, step, "completed", output, None, attempts, started, cursor + 1, results
            )
            cursor += 1
            released = None
        await self._complete(run_id, pipeline, dict(row.input), results)

    async def run_step(self, ctx: StepContext) -> tuple[Any, int]:
        step = ctx.step
        kind = self.gateway.registry("step_kinds").get(step.kind)
        await self.publish(ctx.run_id, "step.started", {"step": step.id, "kind": step.kind})
        if kind is None:
            raise _StepFailed(f"unknown step kind {step.kind!r}", 1)
        for attempt in range(step.retries + 1):
            try:
                async with asyncio.timeout(step.timeout_seconds):
                    output = await kind.run(step, ctx)
                return jsonable(output), attempt + 1
            except (Suspend, asyncio.CancelledError):
                raise
            except StepError as exc:
                raise _StepFailed(str(exc), attempt + 1) from None
            except _StepFailed:
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    message = f"step timed out after {step.timeout_seconds} s"
                else:
                    message = f"{type(exc).__name__}: {exc}"
                if attempt >= step.retries:
                    raise _StepFailed(message, attempt + 1) from None
                delay = step.backoff_seconds * (2**attempt)
                await self.publish(
                    ctx.run_id,
                    "step.retry",
                    {
                        "step": step.id,
                        "attempt": attempt + 1,
                        "error": message,
                        "delay_seconds": delay,
                    },
                )
                await asyncio.sleep(delay)
        raise _StepFailed("no attempt made", 0)  # pragma: no cover - loop always returns

    async def run_nested(self, parent: StepContext, steps: list[Step]) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for step in steps:
            ctx = StepContext(
                self,
                parent.run_id,
                parent.pipeline,
                parent.input,
                parent.results,
                step,
                None,
                parent.iteration,
                True,
            )
            if step.when is not None and not step.when(ctx):
                continue
            try:
                output, _attempts = await self.run_step(ctx)
            except Suspend:
                raise _StepFailed(
                    f"step {step.id!r}: approval and wait steps must be top-level steps", 1
                ) from None
            except _StepFailed as failure:
                await self.publish(
                    parent.run_id, "step.failed", {"step": step.id, "error": failure.message}
                )
                if not step.continue_on_error:
                    raise
                output = {"error": failure.message}
            else:
                await self.publish(
                    parent.run_id, "step.completed", {"step": step.id, "output": output}
                )
            parent.results[step.id] = output
            outputs[step.id] = output
        return outputs

    async def _breakpoint_at(self, pipeline_id: str, step_id: str) -> bool:
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(breakpoints.c.step_id).where(
                        breakpoints.c.step_id == step_id,
                        sa.or_(
                            breakpoints.c.pipeline_id.is_(None),
                            breakpoints.c.pipeline_id == pipeline_id,
                        ),
                    )
                )
            ).first()
        return row is not None

    async def _record(
        self,
        run_id: str,
        step: Step,
        status: str,
        output: Any,
        error: str | None,
        attempts: int,
        started: int,
        cursor: int,
        results: dict[str, Any],
    ) -> None:
        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(
                conn, run_id, cursor=cursor, results=results, released_step=None
            )
            await conn.execute(
                step_results.insert().values(
                    run_id=run_id,
                    step_id=step.id,
                    status=status,
                    attempts=attempts,
                    output=output,
                    error=error,
                    started_ms=started,
                    finished_ms=now_ms(),
                )
            )
            event = {"completed": "step.completed", "failed": "step.failed"}.get(
                status, "step.skipped"
            )
            data: dict[str, Any] = {"step": step.id, "attempts": attempts}
            if status == "completed":
                data["output"] = output
            if error is not None:
                data["error"] = error
                data["continued"] = True
            return [(event, data)]

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

    async def _pause(self, run_id: str, step_id: str) -> None:
        async def write(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
            await self._guarded_update(
                conn,
                run_id,
                status="paused",
                paused_at=step_id,
                lease_owner=None,
                lease_expires_ms=None,
            )
            return [("run.paused", {"step": step_id, "reason": "breakpoint"})]

        await self.commit(run_id, write)

    async def _fail(
        self,
        run_id: str,
        error: dict[str, Any],
        extra: list[tuple[str, dict[str, Any]]],
        step_row: tuple[Step, int, int, str] | None = None,
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
                step, attempts, started, message = step_row
                await conn.execute(
                    step_results.insert().values(
                        run_id=run_id,
                        step_id=step.id,
                        status="failed",
                        attempts=attempts,
                        output=None,
                        error=message,
                        started_ms=started,
                        finished_ms=now_ms(),
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
        output = jsonable(output)

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
        events: list[Event] = []
        now = now_ms()
        async with self.store.write() as conn:
            row, step_id = await _waiting_run(conn, run_id, "approval", "an approval")
            status = decision or "timed_out"
            await conn.execute(
                approvals.update()
                .where(approvals.c.run_id == run_id, approvals.c.step_id == step_id)
                .values(status=status, resolved_ms=now, approver=approver, reason=reason)
            )
            stream = stream_of(run_id)
            resolved = {
                "run_id": run_id,
                "step": step_id,
                "decision": status,
                "approver": approver,
                "reason": reason,
                "timed_out": timed_out,
            }
            events.append(
                await self.store.append_event(stream, "approval.resolved", resolved, conn)
            )
            if decision is None:
                error = {"message": f"approval {step_id!r} timed out", "step": step_id}
                await conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(
                        status="failed",
                        error=error,
                        waiting_for=None,
                        finished_ms=now,
                        updated_ms=now,
                    )
                )
                events.append(
                    await self.store.append_event(
                        stream, "run.failed", {"run_id": run_id, "error": error}, conn
                    )
                )
            else:
                resolutions = dict(row.resolutions or {})
                resolutions[step_id] = {
                    "decision": decision,
                    "approver": approver,
                    "reason": reason,
                    "at_ms": now,
                }
                await conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(
                        status="pending",
                        waiting_for=None,
                        resolutions=resolutions,
                        updated_ms=now,
                    )
                )
                events.append(
                    await self.store.append_event(
                        stream,
                        "run.resumed",
                        {"run_id": run_id, "step": step_id, "by": approver},
                        conn,
                    )
                )
        await self._notify(events)
        self.wake.set()

    async def resume(self, run_id: str, raw_input: Any, by: str) -> None:
        """Give a run waiting at a ``wait`` step its input (validated against the step's
        schema: 422 naming the field, and the run still waits)."""
        events: list[Event] = []
        now = now_ms()
        async with self.store.write() as conn:
            row, step_id = await _waiting_run(conn, run_id, "input", "input")
            pipeline = self.catalog.for_run(row.pipeline_id, row.definition_key)
            step = pipeline.step(step_id) if pipeline is not None else None
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
            resolutions = dict(row.resolutions or {})
            resolutions[step_id] = {"input": value, "by": by, "at_ms": now}
            await conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status="pending",
                    waiting_for=None,
                    resolutions=resolutions,
                    updated_ms=now,
                )
            )
            events.append(
                await self.store.append_event(
                    stream_of(run_id),
                    "run.resumed",
                    {"run_id": run_id, "step": step_id, "by": by},
                    conn,
                )
            )
        await self._notify(events)
        self.wake.set()

    async def release(self, run_id: str, by: str) -> None:
        events: list[Event] = []
        async with self.store.write() as conn:
            row = await _run_row(conn, run_id)
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
            events.append(
                await self.store.append_event(
                    stream_of(run_id),
                    "run.released",
                    {"run_id": run_id, "step": row.paused_at, "by": by},
                    conn,
                )
            )
        await self._notify(events)
        self.wake.set()

    async def cancel(self, run_id: str, by: str, reason: str | None) -> None:
        events: list[Event] = []
        now = now_ms()
        async with self.store.write() as conn:
            row = await _run_row(conn, run_id)
            if row.status in TERMINAL:
                raise GatewayError(409, "run_finished", f"run {run_id} is already {row.status}")
            await conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status="cancelled",
                    waiting_for=None,
                    finished_ms=now,
                    updated_ms=now,
                    lease_owner=None,
                    lease_expires_ms=None,
                    error={"message": "cancelled", "by": by, "reason": reason},
                )
            )
            await conn.execute(
                approvals.update()
                .where(approvals.c.run_id == run_id, approvals.c.status == "pending")
                .values(status="cancelled", resolved_ms=now)
            )
            events.append(
                await self.store.append_event(
                    stream_of(run_id),
                    "run.cancelled",
                    {"run_id": run_id, "by": by, "reason": reason},
                    conn,
                )
            )
            pipeline_id = row.pipeline_id
        task = self.tasks.get(run_id)
        if task is not None:
            task.cancel()
        await self._notify(events)
        self.m_finished.labels(pipeline_id, "cancelled").inc()
        self.wake.set()


class _StepFailed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


async def _waiting_run(conn: AsyncConnection, run_id: str, kind: str, what: str) -> tuple[Any, str]:
    """The run and the step it waits at, or 409 ``not_waiting_for_<kind>``."""
    row = await _run_row(conn, run_id)
    waiting = row.waiting_for or {}
    if row.status != "waiting" or waiting.get("type") != kind:
        raise GatewayError(
            409, f"not_waiting_for_{kind}", f"run {run_id} is {row.status}, not waiting for {what}"
        )
    return row, waiting["step"]


async def _run_row(conn: AsyncConnection, run_id: str) -> Any:
    row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
    if row is None:
        raise GatewayError(404, "run_not_found", f"no run {run_id!r}")
    return row


def engine_of(app: Quart | None = None) -> Engine:
    engine: Engine | None = context(app).extras.get(ENGINE_KEY)
    if engine is None:
        raise GatewayError(503, "pipelines_not_ready", "the pipelines engine is not running")
    return engine
