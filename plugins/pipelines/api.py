"""The pipelines plugin's API: what its routes call, and what other plugins call to look
up a pipeline, start a run, follow its events and await its end.

Other plugins reach it as the service ``host.api.service(PipelinesAPI)`` (importing the
type from ``plugins.pipelines.contract``), which exists only while the pipelines plugin
is loaded and started. Runs started here are ordinary runs: stored, owned by
the principal that started them, listed by ``GET /runs``, refused while the gateway is
paused, paused by breakpoints, and they need the caller to hold the ``allow_pipeline_run``
gate.

A method that takes a ``reader`` or a ``principal`` applies ownership
(``host/auth/ownership.py``): another principal's run, schedule or breakpoint is 404 as
if it did not exist unless the principal holds ``allow_pipeline_read_all``, and acting on
it needs ``allow_pipeline_act_all`` (403). A method that acts for a principal also checks
the gate its route requires (403 ``policy_gate_denied``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from quart import Quart

from host.api import (
    Event,
    GatewayContext,
    GatewayError,
    Principal,
    context,
    now_ms,
    owner_key,
    require_owner,
)
from plugins.pipelines import (
    approval_queue,
    breakpoints,
    run_stats,
    runs,
    schedules,
    webhooks,
)
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.definition import Pipeline
from plugins.pipelines.engine import engine_of
from plugins.pipelines.gates import GATE_ACT_ALL, GATE_APPROVE, GATE_READ_ALL, GATE_RUN
from plugins.pipelines.idempotency import checked_key, webhook_key
from plugins.pipelines.models import (
    ApprovalList,
    ApprovalQuery,
    ApprovalRecord,
    Breakpoint,
    BreakpointList,
    FireResponse,
    RunList,
    RunQuery,
    RunRecord,
    ScheduleList,
    ScheduleRecord,
    ScheduleRequest,
    TriggerList,
    TriggerRecord,
)
from plugins.pipelines.runs import STOP_EVENTS, RunState, not_found, stream_of
from plugins.pipelines.start import RunOrigin, validate_input

CATALOG_KEY = "pipelines.catalog"

__all__ = ["GATE_RUN", "STOP_EVENTS", "PipelinesAPI", "RunState"]


class PipelinesAPI:
    def __init__(self, app: Quart) -> None:
        self.app = app

    @property
    def gateway(self) -> GatewayContext:
        return context(self.app)

    # -- pipelines ------------------------------------------------------------------------

    def catalog(self) -> PipelineCatalog:
        """The loaded pipelines; 503 ``pipelines_not_ready`` before the plugin started."""
        found: PipelineCatalog | None = self.gateway.extras.get(CATALOG_KEY)
        if found is None:
            raise GatewayError(503, "pipelines_not_ready", "the pipelines plugin has not started")
        return found

    def pipeline(self, pipeline_id: str) -> Pipeline | None:
        """The current definition of ``pipeline_id``, or None."""
        return self.catalog().get(pipeline_id)

    def pipeline_ids(self) -> list[str]:
        return sorted(self.catalog().current)

    def require_pipeline(self, pipeline_id: str, missing: GatewayError | None = None) -> Pipeline:
        """The current definition of ``pipeline_id``; else ``missing``, by default 404
        ``pipeline_not_found``."""
        pipeline = self.pipeline(pipeline_id)
        if pipeline is None:
            raise missing or GatewayError(404, "pipeline_not_found", f"no pipeline {pipeline_id!r}")
        return pipeline

    # -- runs -----------------------------------------------------------------------------

    async def start(
        self,
        pipeline_id: str,
        raw_input: Any,
        *,
        principal: Principal,
        trigger: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> tuple[str, bool]:
        """Start a run as ``principal``; returns its id and whether it was created (False:
        ``idempotency_key`` found the run it started before). 403 ``policy_gate_denied``
        without the run gate, 404 ``pipeline_not_found``, 400 ``invalid_idempotency_key``
        unless 1 to 200 characters, 503 ``gateway_paused`` while paused, 422
        ``validation_failed`` (``details.param`` names the field) when the input fails the
        pipeline's schema, 422 ``idempotency_key_reused`` when ``principal`` used the key
        before with another input. Nothing is stored on any of these. ``idempotency_key``
        is scoped to ``principal`` (another principal's same key starts its own run); the
        same key with the same input returns the first run."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "running a pipeline")
        pipeline = self.require_pipeline(pipeline_id)
        key = checked_key(idempotency_key, "idempotency_key")
        origin = RunOrigin.of(principal, trigger, pipeline_id, raw_input, key)
        return await engine_of(self.app).starter.start_run(pipeline, raw_input, origin)

    async def start_run(
        self,
        pipeline_id: str,
        raw_input: Any,
        *,
        principal: Principal,
        trigger: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> str:
        """:meth:`start`, returning the run's id."""
        run_id, _created = await self.start(
            pipeline_id,
            raw_input,
            principal=principal,
            trigger=trigger,
            idempotency_key=idempotency_key,
        )
        return run_id

    async def state(self, run_id: str) -> RunState:
        """The run as stored; 404 ``run_not_found``."""
        async with self.gateway.store.read() as conn:
            row = await runs.run_row(conn, run_id)
        return RunState.of(runs.record(row))

    async def record(self, run_id: str, reader: Principal | None = None) -> RunRecord:
        """The run's record with its steps; 404 ``run_not_found``, also when ``reader``
        may not read it."""
        async with self.gateway.store.read() as conn:
            row = await runs.run_row(conn, run_id)
            if reader is not None:
                require_owner(
                    reader, row.owner, read_all=GATE_READ_ALL, not_found=not_found(run_id)
                )
            steps = await runs.step_rows(conn, run_id)
        return runs.record(row, steps)

    async def list_runs(self, query: RunQuery, reader: Principal) -> RunList:
        """The runs ``reader`` may read, newest first, filtered and paged by ``query``."""
        async with self.gateway.store.read() as conn:
            return await runs.page(conn, query, reader)

    async def run_counts(
        self, reader: Principal, finished_since_ms: int | None = None
    ) -> run_stats.RunCounts:
        """The runs ``reader`` may read by status, counted in SQL (with
        ``finished_since_ms``: those finished since then, and each status's earliest
        ``finished_ms``)."""
        async with self.gateway.store.read() as conn:
            return await run_stats.counts(conn, reader, finished_since_ms)

    async def run_timeline(
        self, reader: Principal, start_ms: int, end_ms: int, buckets: int
    ) -> dict[str, Any]:
        """Per time bucket, the readable runs queued, started, completed, failed in it and
        running at its end, counted in SQL (``run_stats.timeline``)."""
        async with self.gateway.store.read() as conn:
            return await run_stats.timeline(conn, reader, start_ms, end_ms, buckets)

    async def events(self, run_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """The run's events after ``after`` (stored ones, then live ones), ending with the
        first of ``STOP_EVENTS``, or without one if the gateway shuts down meanwhile.
        Heartbeat ticks are left out."""
        hub = self.gateway.hub
        async with contextlib.aclosing(
            hub.subscribe(stream_of(run_id), after, lambda e: e.type in STOP_EVENTS)
        ) as stream:
            async for event in stream:
                if event is not None:
                    yield event

    async def wait(self, run_id: str, on_event: Callable[[Event], None] | None = None) -> RunState:
        """Await the run's end, or the moment it waits (approval, input) or pauses at a
        breakpoint; returns its state then. ``on_event`` sees each event on the way."""
        async with contextlib.aclosing(self.events(run_id)) as stream:
            async for event in stream:
                if on_event is not None:
                    on_event(event)
        return await self.state(run_id)

    async def _acting_on_run(self, run_id: str, principal: Principal) -> None:
        """404 ``run_not_found`` unless ``principal`` may read the run; 403
        ``policy_gate_denied`` unless it may also act on it."""
        async with self.gateway.store.read() as conn:
            owner = await runs.owner_of(conn, run_id)
        require_owner(
            principal,
            owner,
            read_all=GATE_READ_ALL,
            act_all=GATE_ACT_ALL,
            not_found=not_found(run_id),
            action="acting on another principal's run",
        )

    async def resume(self, run_id: str, raw_input: Any, principal: Principal) -> RunRecord:
        """Give a run waiting at a ``wait`` step its input; 422 names the failing field
        (the run still waits); 409 when the run does not wait for input."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "resuming a run")
        await self._acting_on_run(run_id, principal)
        await engine_of(self.app).actions.resume(run_id, raw_input, principal.name)
        return await self.record(run_id, principal)

    async def decide(
        self, run_id: str, decision: str, principal: Principal, reason: str | None
    ) -> RunRecord:
        """Approve (``approved``) or deny (``denied``) the approval gate the run waits at;
        409 if it does not wait for an approval. Approving is the approver's own job,
        whoever owns the run (four eyes): the approve gate is the permission."""
        self.gateway.auth.require_gate(principal, GATE_APPROVE, "deciding an approval")
        actions = engine_of(self.app).actions
        await actions.resolve_approval(run_id, decision, principal.name, reason)
        return await self.record(run_id)

    async def decide_approval(
        self, approval_id: str, decision: str, principal: Principal, reason: str | None
    ) -> ApprovalRecord:
        """Approve or deny any approval of ``GET /approvals``: a run's gate by its run id
        (as :meth:`decide`), another plugin's (``apr_...``) through the approvals queue.
        404 ``approval_not_found``; 409 when it is not pending."""
        if approval_queue.is_queue_id(approval_id):
            return await approval_queue.ApprovalQueue(self.app).decide(
                approval_id, decision, principal, reason
            )
        self.gateway.auth.require_gate(principal, GATE_APPROVE, "deciding an approval")
        async with self.gateway.store.read() as conn:
            if not await runs.exists(conn, approval_id):
                raise approval_queue.not_found(approval_id)
        await self.decide(approval_id, decision, principal, reason)
        async with self.gateway.store.read() as conn:
            return await runs.latest_approval(conn, approval_id)

    async def cancel(self, run_id: str, principal: Principal, reason: str | None) -> RunRecord:
        """Cancel a run that has not finished; 409 if it already has."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "cancelling a run")
        await self._acting_on_run(run_id, principal)
        await engine_of(self.app).actions.cancel(run_id, principal.name, reason)
        return await self.record(run_id, principal)

    async def release(self, run_id: str, principal: Principal) -> RunRecord:
        """Let a run paused at a breakpoint continue; 409 if it is not paused."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "releasing a run")
        await self._acting_on_run(run_id, principal)
        await engine_of(self.app).actions.release(run_id, principal.name)
        return await self.record(run_id, principal)

    # -- for plugins that apply ownership themselves (jobs, deploy) -------------------------

    async def run_page(
        self,
        *,
        owner: str | None,
        statuses: Sequence[str] | None = None,
        before: int | None = None,
        limit: int = 50,
        pipeline_id: str | None = None,
    ) -> list[tuple[int, RunRecord]]:
        """``(n, record)`` of the runs of ``owner`` (every run's when None), newest first;
        ``n`` orders them: pass the last one as ``before`` for the next page."""
        async with self.gateway.store.read() as conn:
            return await runs.numbered(conn, owner, statuses, before, limit, pipeline_id)

    async def cancel_run(self, run_id: str, by: str, reason: str | None) -> RunRecord:
        """Cancel an unfinished run for ``by`` without a gate or ownership check (the
        calling plugin made its own): 404 ``run_not_found``, 409 ``run_finished``."""
        await engine_of(self.app).actions.cancel(run_id, by, reason)
        return await self.record(run_id)

    async def list_paused_runs(self, reader: Principal) -> RunList:
        """The runs paused at a breakpoint that ``reader`` may read, oldest first."""
        async with self.gateway.store.read() as conn:
            return await runs.paused(conn, reader)

    async def list_approvals(self, query: ApprovalQuery, reader: Principal) -> ApprovalList:
        """Approvals of ``reader``'s runs (every run's with the read-all or approve gate)."""
        async with self.gateway.store.read() as conn:
            return await runs.approvals_page(conn, query, reader)

    # -- breakpoints ----------------------------------------------------------------------

    async def list_breakpoints(self, reader: Principal) -> BreakpointList:
        async with self.gateway.store.read() as conn:
            return await breakpoints.visible(conn, reader)

    async def add_breakpoint(
        self, step_id: str, pipeline_id: str | None, principal: Principal
    ) -> Breakpoint:
        """Pause every run before ``step_id`` (a step id or path), of ``pipeline_id`` only
        if given: 404 ``pipeline_not_found``, or ``step_not_found`` when it has no such
        step. It pauses everyone's runs: the act-all gate is required."""
        self.gateway.auth.require_gate(principal, GATE_ACT_ALL, "adding a breakpoint")
        if pipeline_id is not None:
            pipeline = self.require_pipeline(pipeline_id)
            if pipeline.step_at(step_id) is None:
                raise GatewayError(
                    404, "step_not_found", f"pipeline {pipeline.id!r} has no step {step_id!r}"
                )
        values = {
            "step_id": step_id,
            "pipeline_id": pipeline_id,
            "created_by": principal.name,
            "owner": owner_key(principal),
            "created_ms": now_ms(),
        }
        return await breakpoints.put(self.gateway.store, values)

    async def remove_breakpoint(self, step_id: str, principal: Principal) -> None:
        """Remove a breakpoint (runs paused at it stay paused); 404 ``breakpoint_not_found``."""
        self.gateway.auth.require_gate(principal, GATE_ACT_ALL, "removing a breakpoint")
        if not await breakpoints.remove(self.gateway.store, step_id):
            raise GatewayError(404, "breakpoint_not_found", f"no breakpoint on step {step_id!r}")

    # -- triggers -------------------------------------------------------------------------

    async def list_triggers(self, reader: Principal) -> TriggerList:
        """One manual trigger per pipeline, one per schedule ``reader`` may read, one per
        configured webhook."""
        found = [
            TriggerRecord(
                id=f"manual:{p.id}",
                type="manual",
                pipeline_id=p.id,
                description=f"start {p.id} now",
            )
            for p in sorted(self.catalog().current.values(), key=lambda p: p.id)
        ]
        async with self.gateway.store.read() as conn:
            rows = await schedules.visible(conn, reader)
        found += [
            TriggerRecord(
                id=f"schedule:{r.id}",
                type="schedule",
                pipeline_id=r.pipeline_id,
                description=f"schedule {r.cron or f'every {r.interval_seconds:g} s'}",
            )
            for r in rows
        ]
        found += [
            TriggerRecord(
                id=f"webhook:{name}",
                type="webhook",
                pipeline_id=str(config.get("pipeline", "")),
                description=f"POST /triggers/webhook:{name}/webhook, HMAC-signed",
            )
            for name, config in sorted(webhooks.tables(self.gateway.settings).items())
        ]
        return TriggerList(triggers=found)

    async def fire(
        self,
        trigger_id: str,
        raw_input: Any,
        principal: Principal,
        idempotency_key: str | None = None,
    ) -> FireResponse:
        """Fire a trigger now: ``manual:<pipeline>`` (and ``webhook:<name>``) start a run
        with ``raw_input`` (``idempotency_key`` as for :meth:`start`: a repeat returns the
        first run, outcome ``duplicate``); ``schedule:<id>`` fires the schedule once (its
        overlap policy applies; 400 ``invalid_idempotency_key`` with a key, as each tick
        has its own). 404 ``trigger_not_found``; 503 while the gateway is paused."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "firing a trigger")
        kind, _, name = trigger_id.partition(":")
        missing = GatewayError(404, "trigger_not_found", f"no trigger {trigger_id!r}")
        hooks = webhooks.tables(self.gateway.settings)
        if kind == "manual" or (kind == "webhook" and name in hooks):
            pipeline_id = name if kind == "manual" else str(hooks[name].get("pipeline", ""))
            trigger: dict[str, Any] = {"type": kind, "trigger_id": trigger_id}
            if kind == "webhook":
                trigger["manual"] = True
            pipeline = self.require_pipeline(pipeline_id, missing)
            run_id, created = await self.start(
                pipeline.id,
                raw_input or {},
                principal=principal,
                trigger=trigger,
                idempotency_key=idempotency_key,
            )
            outcome = "fired" if created else "duplicate"
            return FireResponse(trigger_id=trigger_id, outcome=outcome, runId=run_id)
        if kind == "schedule":
            row = await self._schedule_row(name, principal, missing)
            if idempotency_key is not None:
                raise GatewayError(
                    400,
                    "invalid_idempotency_key",
                    "Idempotency-Key applies to manual and webhook triggers: a schedule's "
                    "ticks are once-only already",
                )
            await self.gateway.lifecycle.require_running()
            outcome = await engine_of(self.app).scheduler.fire(row, now_ms(), manual=True)
            fresh = await self._schedule_row(name, principal, missing)
            fired = fresh.last_run_id if outcome == "fired" else None
            return FireResponse(trigger_id=trigger_id, outcome=outcome, runId=fired)
        raise missing

    def webhook(self, trigger_id: str) -> tuple[dict[str, Any], str | None] | None:
        """The configuration of the webhook trigger ``webhook:<name>`` and its secret
        (None when it does not resolve), or None when there is no such webhook."""
        kind, _, name = trigger_id.partition(":")
        table = webhooks.tables(self.gateway.settings).get(name) if kind == "webhook" else None
        if table is None:
            return None
        return table, webhooks.secret_of(table, self.gateway.settings.config_dir)

    async def deliver(
        self, trigger_id: str, pipeline: Pipeline, delivery: str, raw_input: Any
    ) -> FireResponse:
        """Start the run of a verified webhook delivery; the run is owned by
        ``trigger_id`` (read-all holders see it), and a repeated ``delivery`` returns the
        first run (outcome ``duplicate_delivery``)."""
        name = trigger_id.partition(":")[2]
        origin = RunOrigin(
            trigger={"type": "webhook", "trigger_id": trigger_id, "delivery": delivery},
            created_by=trigger_id,
            owner=trigger_id,  # webhook:<name>: read-all holders see its runs
            idempotency_key=webhook_key(name, delivery),
        )
        starter = engine_of(self.app).starter
        run_id, created = await starter.start_run(pipeline, raw_input, origin)
        outcome = "fired" if created else "duplicate_delivery"
        return FireResponse(trigger_id=trigger_id, outcome=outcome, runId=run_id)

    # -- schedules ------------------------------------------------------------------------

    async def _schedule_row(
        self, schedule_id: str, principal: Principal, missing: GatewayError | None = None
    ) -> Any:
        """The schedule ``principal`` may act on (its own, or with the act-all gate):
        ``missing`` (404 ``schedule_not_found``) unless it may read it, else 403."""
        missing = missing or GatewayError(404, "schedule_not_found", f"no schedule {schedule_id!r}")
        async with self.gateway.store.read() as conn:
            row = await schedules.schedule_row(conn, schedule_id)
        if row is None:
            raise missing
        require_owner(
            principal,
            row.owner,
            read_all=GATE_READ_ALL,
            act_all=GATE_ACT_ALL,
            not_found=missing,
            action="acting on another principal's schedule",
        )
        return row

    async def list_schedules(self, reader: Principal) -> ScheduleList:
        async with self.gateway.store.read() as conn:
            rows = await schedules.visible(conn, reader)
        return ScheduleList(schedules=[schedules.record(self.gateway, r) for r in rows])

    async def add_schedule(self, request: ScheduleRequest, principal: Principal) -> ScheduleRecord:
        """404 unknown pipeline; 422 bad cron, time zone or input; 409 an existing id."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "adding a schedule")
        pipeline = self.require_pipeline(request.pipeline_id)
        schedules.check_timing(request.cron, request.interval_seconds, request.timezone)
        engine = engine_of(self.app)
        run_input = validate_input(pipeline, request.input)
        now = now_ms()
        next_fire = schedules.next_after(
            request.cron, request.timezone, request.interval_seconds, now
        )
        values = {
            "id": request.id or uuid.uuid4().hex[:12],
            "pipeline_id": pipeline.id,
            "cron": request.cron,
            "interval_seconds": request.interval_seconds,
            "timezone": request.timezone,
            "input": run_input,
            "overlap": request.overlap,
            "created_by": principal.name,
            "owner": owner_key(principal),
            "created_ms": now,
            "next_fire_ms": next_fire,
            "last_fire_ms": None,
            "last_outcome": None,
            "last_run_id": None,
            "missed": 0,
        }
        if not await schedules.insert(self.gateway.store, values):
            raise GatewayError(409, "schedule_exists", f"schedule {values['id']!r} already exists")
        engine.state.due_at(schedule_ms=next_fire)
        return ScheduleRecord(**values)

    async def remove_schedule(self, schedule_id: str, principal: Principal) -> None:
        """404 if there is none (or ``principal`` cannot see it); 403 another's without
        the act-all gate."""
        self.gateway.auth.require_gate(principal, GATE_RUN, "removing a schedule")
        await self._schedule_row(schedule_id, principal)
        if not await schedules.remove(self.gateway.store, schedule_id):
            raise GatewayError(404, "schedule_not_found", f"no schedule {schedule_id!r}")
