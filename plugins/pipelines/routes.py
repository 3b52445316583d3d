"""Pipelines, runs, approvals and debug routes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import croniter
from pydantic import BaseModel, ValidationError
from quart import Blueprint, Response, request
from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_response,
)

from host.api import (
    ErrorResponse,
    EventPage,
    GatewayError,
    InvalidJSON,
    Secret,
    SecretError,
    context,
    current_principal,
    document_stream,
    now_ms,
    owned_by,
    owner_key,
    parse_json,
    public,
    raw_body,
    require_owner,
    requires_gate,
    stream_response,
    validation_message,
)
from plugins.pipelines import schedules as schedules_mod
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.config import webhook_tolerance
from plugins.pipelines.definition import Pipeline
from plugins.pipelines.engine import TERMINAL_EVENTS, Engine, engine_of, run_row, stream_of
from plugins.pipelines.idempotency import (
    MAX_KEY,
    api_keys,
    fingerprint,
    shown,
    webhook_key,
)
from plugins.pipelines.models import (
    ApprovalList,
    ApprovalQuery,
    ApprovalRecord,
    Breakpoint,
    BreakpointList,
    BreakpointRequest,
    DecisionRequest,
    Deleted,
    FireRequest,
    FireResponse,
    PipelineDetail,
    PipelineList,
    PipelineSummary,
    ResumeRequest,
    RunList,
    RunQuery,
    RunRecord,
    RunRequest,
    ScheduleList,
    ScheduleRecord,
    ScheduleRequest,
    StartRequest,
    StartResponse,
    TriggerList,
    TriggerRecord,
    WebhookPayload,
)
from plugins.pipelines.tables import approvals, breakpoints, runs, schedules, step_results

GATE_RUN = "allow_pipeline_run"
GATE_APPROVE = "allow_pipeline_approve"
# Ownership (host/auth/ownership.py): runs, schedules and breakpoints are their creator's;
# these gates read and act on everyone's.
GATE_READ_ALL = "allow_pipeline_read_all"
GATE_ACT_ALL = "allow_pipeline_act_all"
CATALOG_KEY = "pipelines.catalog"
IDEMPOTENCY_HEADER = "Idempotency-Key"

bp = Blueprint("pipelines", __name__)


def catalog() -> PipelineCatalog:
    found: PipelineCatalog | None = context().extras.get(CATALOG_KEY)
    if found is None:
        raise GatewayError(503, "pipelines_not_ready", "the pipelines plugin has not started")
    return found


def pipeline_or_404(pipeline_id: str) -> Pipeline:
    pipeline = catalog().get(pipeline_id)
    if pipeline is None:
        raise GatewayError(404, "pipeline_not_found", f"no pipeline {pipeline_id!r}")
    return pipeline


async def body_of(model: type[BaseModel]) -> Any:
    """The JSON body as ``model``; an empty body is ``{}``. 400 naming the field."""
    raw = await request.get_data()
    data: Any = {}
    if raw.strip():
        if not request.is_json:
            raise GatewayError(
                415, "unsupported_media_type", "send the request body as application/json"
            )
        data = await request.get_json()
    if not isinstance(data, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    data.pop("policy_gate", None)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, details={"param": param}) from None


def _no_run(run_id: str) -> GatewayError:
    # The very error of an unknown run: another principal's run is not revealed.
    return GatewayError(404, "run_not_found", f"no run {run_id!r}")


async def run_record(run_id: str, *, check: bool = True) -> RunRecord:
    """The run's record; with ``check``, 404 ``run_not_found`` unless the caller may read
    it (its own, or ``allow_pipeline_read_all``)."""
    store = context().store
    async with store.read() as conn:
        row = await run_row(conn, run_id)
        if check:
            require_owner(
                current_principal(), row.owner, read_all=GATE_READ_ALL, not_found=_no_run(run_id)
            )
        steps = (
            await conn.execute(
                sa.select(step_results)
                .where(step_results.c.run_id == run_id)
                .order_by(step_results.c.n)
            )
        ).all()
    return _record(row, steps)


def _record(row: Any, steps: Sequence[Any] | None = None) -> RunRecord:
    return RunRecord(
        id=row.id,
        pipeline_id=row.pipeline_id,
        pipeline_version=row.pipeline_version,
        definition=row.definition,
        status=row.status,
        input=row.input,
        output=row.output,
        error=row.error,
        steps=[
            {
                "step_id": s.step_id,
                "status": s.status,
                "attempts": s.attempts,
                "output": s.output,
                "error": s.error,
                "started_ms": s.started_ms,
                "finished_ms": s.finished_ms,
                "duration_ms": s.finished_ms - s.started_ms,
            }
            for s in steps or []
        ],
        next_step_index=row.cursor,
        waiting_for=row.waiting_for,
        paused_at=row.paused_at,
        trigger=row.trigger,
        idempotency_key=shown(row.idempotency_key),
        created_by=row.created_by,
        owner=row.owner,
        created_ms=row.created_ms,
        started_ms=row.started_ms,
        updated_ms=row.updated_ms,
        finished_ms=row.finished_ms,
        claims=row.claims,
    )


async def start_run(
    pipeline: Pipeline,
    raw_input: Any,
    trigger: dict[str, Any],
    idempotency_key: str | None = None,
) -> tuple[str, bool]:
    """A run started by this request's caller; ``idempotency_key`` (the caller's own) is
    scoped to the caller. See :meth:`Engine.start_run`."""
    caller = current_principal()
    stored, older = api_keys(caller, idempotency_key)
    return await engine_of().start_run(
        pipeline,
        raw_input,
        trigger=trigger,
        created_by=caller.name,
        owner=owner_key(caller),
        idempotency_key=stored,
        also_matches=older,
        fingerprint=fingerprint(pipeline.id, raw_input) if stored else None,
    )


# -- pipelines ---------------------------------------------------------------------------------


@bp.get("/pipelines")
@validate_response(PipelineList)
async def list_pipelines() -> PipelineList:
    """Registered pipelines, and pipeline files that failed to load."""
    cat = catalog()
    return PipelineList(
        pipelines=[
            PipelineSummary(
                id=p.id,
                description=p.description,
                version=p.version,
                source=p.source,
                steps=len(p.steps),
            )
            for p in sorted(cat.current.values(), key=lambda p: p.id)
        ],
        errors=cat.errors,
    )


@bp.get("/pipelines/<pipeline_id>")
@validate_response(PipelineDetail)
async def describe_pipeline(pipeline_id: str) -> PipelineDetail:
    """One pipeline: its steps and its input and output JSON Schemas."""
    p = pipeline_or_404(pipeline_id)
    return PipelineDetail(
        id=p.id,
        description=p.description,
        version=p.version,
        source=p.source,
        steps=[s.describe() for s in p.steps],
        input_schema=p.input_schema(),
        output_schema=p.output_schema(),
    )


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise GatewayError(
            400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_KEY} characters"
        )
    return key


@bp.post("/pipelines/<pipeline_id>/start")
@requires_gate(GATE_RUN)
@document_request(StartRequest)
@validate_response(StartResponse, 202)
@document_response(ErrorResponse, 422)
@document_response(ErrorResponse, 503)
async def start_pipeline(pipeline_id: str) -> Any:
    """Start a run; 202 with its ``runId``. A repeated ``Idempotency-Key`` with the same
    input returns the same run (across restarts), with another input it is 422
    ``idempotency_key_reused``; 422 names the input field that fails the schema; 503 while
    paused."""
    pipeline = pipeline_or_404(pipeline_id)
    body = await body_of(StartRequest)
    run_id, created = await start_run(
        pipeline, body.input, {"type": "api", "route": "start"}, _idempotency_key()
    )
    record = await run_record(run_id, check=False)
    return StartResponse(
        runId=run_id, status=record.status, created=created, events=f"/runs/{run_id}/events"
    ), 202


@bp.post("/pipelines/<pipeline_id>/run")
@requires_gate(GATE_RUN)
@document_request(RunRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 422)
@document_response(ErrorResponse, 503)
async def run_pipeline(pipeline_id: str) -> RunRecord:
    """Run synchronously: the run record once it ends, or in its current state when it
    waits, pauses at a breakpoint, or ``wait_seconds`` pass."""
    pipeline = pipeline_or_404(pipeline_id)
    body = await body_of(RunRequest)
    run_id, _created = await start_run(
        pipeline, body.input, {"type": "api", "route": "run"}, _idempotency_key()
    )
    stops = {*TERMINAL_EVENTS, "run.waiting", "run.paused"}
    hub = context().hub
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(body.wait_seconds):
            async with contextlib.aclosing(
                hub.subscribe(stream_of(run_id), 0, lambda e: e.type in stops)
            ) as events:
                async for _event in events:
                    pass
    return await run_record(run_id, check=False)


# -- runs --------------------------------------------------------------------------------------


async def acting_on_run(run_id: str) -> None:
    """404 ``run_not_found`` unless the caller may read the run; 403
    ``policy_gate_denied`` unless it may also act on it (its own, or
    ``allow_pipeline_act_all``)."""
    async with context().store.read() as conn:
        found = (await conn.execute(sa.select(runs.c.owner).where(runs.c.id == run_id))).first()
    if found is None:
        raise _no_run(run_id)
    require_owner(
        current_principal(),
        found.owner,
        read_all=GATE_READ_ALL,
        act_all=GATE_ACT_ALL,
        not_found=_no_run(run_id),
        action="acting on another principal's run",
    )


@bp.get("/runs")
@validate_querystring(RunQuery)
@validate_response(RunList)
async def list_runs(query_args: RunQuery) -> RunList:
    """Runs, newest first; filter by pipeline, status and creation time; page with
    ``?before=`` (the previous page's ``next_before``)."""
    q = query_args
    stmt = sa.select(runs).order_by(runs.c.n.desc()).limit(q.limit + 1)
    if q.pipeline:
        stmt = stmt.where(runs.c.pipeline_id == q.pipeline)
    if q.status:
        stmt = stmt.where(runs.c.status == q.status)
    if q.since_ms is not None:
        stmt = stmt.where(runs.c.created_ms >= q.since_ms)
    if q.until_ms is not None:
        stmt = stmt.where(runs.c.created_ms < q.until_ms)
    if q.before is not None:
        stmt = stmt.where(runs.c.n < q.before)
    stmt = stmt.where(owned_by(runs.c.owner, current_principal(), GATE_READ_ALL))
    async with context().store.read() as conn:
        rows = (await conn.execute(stmt)).all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    return RunList(
        runs=[_record(r) for r in rows], next_before=rows[-1].n if more and rows else None
    )


@bp.get("/runs/<run_id>")
@validate_response(RunRecord)
async def get_run(run_id: str) -> RunRecord:
    """The run record: input, output, error, per-step results with timings, what it waits
    for. Another principal's run is 404 unless the caller holds ``allow_pipeline_read_all``."""
    return await run_record(run_id)


@bp.get("/runs/<run_id>/events")
@document_response(EventPage, 200)
@document_stream
async def run_events(run_id: str) -> Response:
    """The run's events: SSE with ``Last-Event-ID`` resume, JSONL, or a JSON page; the
    stream ends after the run's terminal event (a finished run's stream replays and ends)."""
    await run_record(run_id)  # 404 for an unknown run, or another's the caller cannot read
    return await stream_response(
        context().hub, request, stream_of(run_id), until=lambda e: e.type in TERMINAL_EVENTS
    )


@bp.post("/runs/<run_id>/resume")
@requires_gate(GATE_RUN)
@document_request(ResumeRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 422)
async def resume_run(run_id: str) -> RunRecord:
    """Give a run waiting at a ``wait`` step its input; 422 names the failing field (the run
    still waits); 409 when the run does not wait for input."""
    body = await body_of(ResumeRequest)
    await acting_on_run(run_id)
    await engine_of().resume(run_id, body.input, current_principal().name)
    return await run_record(run_id)


async def _decide(run_id: str, decision: str) -> RunRecord:
    # Approving is the approver's own job, whoever owns the run (four eyes): the route's
    # gate, allow_pipeline_approve, is the permission, and the answer is the run decided on.
    body = await body_of(DecisionRequest)
    await engine_of().resolve_approval(run_id, decision, current_principal().name, body.reason)
    return await run_record(run_id, check=False)


@bp.post("/runs/<run_id>/approve")
@requires_gate(GATE_APPROVE)
@document_request(DecisionRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def approve_run(run_id: str) -> RunRecord:
    """Approve the approval gate the run waits at; 409 if it does not wait for an approval."""
    return await _decide(run_id, "approved")


@bp.post("/runs/<run_id>/deny")
@requires_gate(GATE_APPROVE)
@document_request(DecisionRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def deny_run(run_id: str) -> RunRecord:
    """Deny the approval gate the run waits at (the step fails); 409 if not waiting."""
    return await _decide(run_id, "denied")


@bp.post("/runs/<run_id>/cancel")
@requires_gate(GATE_RUN)
@document_request(DecisionRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def cancel_run(run_id: str) -> RunRecord:
    """Cancel a run that has not finished; 409 if it already has."""
    body = await body_of(DecisionRequest)
    await acting_on_run(run_id)
    await engine_of().cancel(run_id, current_principal().name, body.reason)
    return await run_record(run_id)


# -- approvals ---------------------------------------------------------------------------------


@bp.get("/approvals")
@validate_querystring(ApprovalQuery)
@validate_response(ApprovalList)
async def list_approvals(query_args: ApprovalQuery) -> ApprovalList:
    """Approvals of the caller's runs (every run's with ``allow_pipeline_read_all`` or
    ``allow_pipeline_approve``), pending ones by default (``?status=all`` for every one),
    oldest first."""
    principal = current_principal()
    approver = principal.has_gate(GATE_APPROVE)
    stmt = (
        sa.select(approvals)
        .select_from(approvals.join(runs, runs.c.id == approvals.c.run_id))
        .where(sa.true() if approver else owned_by(runs.c.owner, principal, GATE_READ_ALL))
        .order_by(approvals.c.requested_ms)
        .limit(query_args.limit)
    )
    if query_args.status != "all":
        stmt = stmt.where(approvals.c.status == query_args.status)
    async with context().store.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return ApprovalList(approvals=[ApprovalRecord(**r._asdict()) for r in rows])


# -- debug -------------------------------------------------------------------------------------


@bp.get("/debug/breakpoints")
@validate_response(BreakpointList)
async def list_breakpoints() -> BreakpointList:
    """Active breakpoints: every run pauses before a step with this id (at any depth)
    or path. The caller's own (every one with ``allow_pipeline_read_all``)."""
    stmt = (
        sa.select(breakpoints)
        .where(owned_by(breakpoints.c.owner, current_principal(), GATE_READ_ALL))
        .order_by(breakpoints.c.created_ms)
    )
    async with context().store.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return BreakpointList(breakpoints=[Breakpoint(**r._asdict()) for r in rows])


@bp.post("/debug/breakpoints")
@requires_gate(GATE_ACT_ALL)
@document_request(BreakpointRequest)
@validate_response(Breakpoint, 201)
async def add_breakpoint() -> Any:
    """Pause every run (however started) before the step ``step_id``: a step id, at any
    depth and in every loop pass, or a step path (``review.approve``, ``rounds[1].reply``);
    optionally of one pipeline only; stored, so it survives restarts."""
    body = await body_of(BreakpointRequest)
    if body.pipeline_id is not None:
        pipeline = pipeline_or_404(body.pipeline_id)
        if pipeline.step_at(body.step_id) is None:
            raise GatewayError(
                404, "step_not_found", f"pipeline {pipeline.id!r} has no step {body.step_id!r}"
            )
    values = {
        "step_id": body.step_id,
        "pipeline_id": body.pipeline_id,
        "created_by": current_principal().name,
        "owner": owner_key(current_principal()),
        "created_ms": now_ms(),
    }
    store = context().store
    async with store.write() as conn:
        await conn.execute(store.dialect.upsert(breakpoints, ["step_id"], values))
    return Breakpoint(**values), 201


@bp.delete("/debug/breakpoints/<step_id>")
@requires_gate(GATE_ACT_ALL)
@validate_response(Deleted)
async def delete_breakpoint(step_id: str) -> Deleted:
    """Remove a breakpoint (runs already paused stay paused until released); 404 if none."""
    async with context().store.write() as conn:
        result = await conn.execute(breakpoints.delete().where(breakpoints.c.step_id == step_id))
    if not result.rowcount:
        raise GatewayError(404, "breakpoint_not_found", f"no breakpoint on step {step_id!r}")
    return Deleted(deleted=step_id)


@bp.get("/debug/runs")
@validate_response(RunList)
async def paused_runs() -> RunList:
    """Runs paused at a breakpoint, oldest first: the caller's own (every one with
    ``allow_pipeline_read_all``)."""
    stmt = (
        sa.select(runs)
        .where(
            runs.c.status == "paused",
            owned_by(runs.c.owner, current_principal(), GATE_READ_ALL),
        )
        .order_by(runs.c.n)
    )
    async with context().store.read() as conn:
        rows = (await conn.execute(stmt)).all()
    return RunList(runs=[_record(r) for r in rows])


@bp.post("/debug/runs/<run_id>/release")
@requires_gate(GATE_RUN)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def release_run(run_id: str) -> RunRecord:
    """Let a run paused at a breakpoint continue (it runs the step it paused before);
    409 if the run is not paused."""
    await acting_on_run(run_id)
    await engine_of().release(run_id, current_principal().name)
    return await run_record(run_id)


# -- triggers and schedules --------------------------------------------------------------------


def _schedule_record(row: Any) -> ScheduleRecord:
    suspended = schedules_mod.suspended(context(), row)
    return ScheduleRecord(**row._asdict(), suspended=suspended)


async def _schedule_row(schedule_id: str, missing: GatewayError | None = None) -> Any:
    """The schedule the caller may act on (its own, or ``allow_pipeline_act_all``):
    ``missing`` (404 ``schedule_not_found``) unless it may read it, else 403."""
    missing = missing or GatewayError(404, "schedule_not_found", f"no schedule {schedule_id!r}")
    async with context().store.read() as conn:
        row = (
            await conn.execute(sa.select(schedules).where(schedules.c.id == schedule_id))
        ).first()
    if row is None:
        raise missing
    require_owner(
        current_principal(),
        row.owner,
        read_all=GATE_READ_ALL,
        act_all=GATE_ACT_ALL,
        not_found=missing,
        action="acting on another principal's schedule",
    )
    return row


def _visible_schedules() -> Any:
    return (
        sa.select(schedules)
        .where(owned_by(schedules.c.owner, current_principal(), GATE_READ_ALL))
        .order_by(schedules.c.created_ms)
    )


@bp.get("/triggers")
@validate_response(TriggerList)
async def list_triggers() -> TriggerList:
    """Triggers: one manual trigger per pipeline (``manual:<pipeline>``), one per
    schedule the caller can see (``schedule:<id>``) and one per configured webhook."""
    found = [
        TriggerRecord(
            id=f"manual:{p.id}", type="manual", pipeline_id=p.id, description=f"start {p.id} now"
        )
        for p in sorted(catalog().current.values(), key=lambda p: p.id)
    ]
    async with context().store.read() as conn:
        rows = (await conn.execute(_visible_schedules())).all()
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
        for name, config in sorted(webhooks().items())
    ]
    return TriggerList(triggers=found)


@bp.post("/triggers/<trigger_id>/fire")
@requires_gate(GATE_RUN)
@document_request(FireRequest)
@validate_response(FireResponse, 202)
@document_response(ErrorResponse, 422)
@document_response(ErrorResponse, 503)
async def fire_trigger(trigger_id: str) -> Any:
    """Fire a trigger now: ``manual:<pipeline>`` starts a run with the body's ``input``;
    ``schedule:<id>`` fires the schedule once (its overlap policy applies). 404 unknown
    trigger; 503 while the gateway is paused."""
    body = await body_of(FireRequest)
    kind, _, name = trigger_id.partition(":")
    if kind == "manual":
        pipeline = pipeline_or_404_as_trigger(name, trigger_id)
        run_id, _created = await start_run(
            pipeline, body.input or {}, {"type": "manual", "trigger_id": trigger_id}
        )
        return FireResponse(trigger_id=trigger_id, outcome="fired", runId=run_id), 202
    if kind == "webhook" and name in webhooks():
        pipeline = pipeline_or_404_as_trigger(str(webhooks()[name].get("pipeline", "")), trigger_id)
        run_id, _created = await start_run(
            pipeline,
            body.input or {},
            {"type": "webhook", "trigger_id": trigger_id, "manual": True},
        )
        return FireResponse(trigger_id=trigger_id, outcome="fired", runId=run_id), 202
    if kind == "schedule":
        missing = GatewayError(404, "trigger_not_found", f"no trigger {trigger_id!r}")
        row = await _schedule_row(name, missing)
        await context().lifecycle.require_running()
        outcome = await schedules_mod.fire_schedule(engine_of(), row, now_ms(), manual=True)
        fresh = await _schedule_row(name, missing)
        fired = fresh.last_run_id if outcome == "fired" else None
        return FireResponse(trigger_id=trigger_id, outcome=outcome, runId=fired), 202
    raise GatewayError(404, "trigger_not_found", f"no trigger {trigger_id!r}")


WEBHOOK_SIGNATURE = "X-Gateway-Signature"
WEBHOOK_DELIVERY = "X-Gateway-Delivery"
WEBHOOK_TIMESTAMP = "X-Gateway-Timestamp"
_DELIVERY_ID = re.compile(r"^[!-\-/-~]{1,200}$")  # visible ASCII but "."
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


def webhooks() -> dict[str, dict[str, Any]]:
    """``[plugins.pipelines.webhooks.<name>]`` tables: ``pipeline``, ``secret`` and
    ``tolerance_seconds``."""
    raw = context().settings.plugin_section("pipelines").get("webhooks") or {}
    return (
        {str(k): v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}
    )


def _webhook_secret(config: dict[str, Any]) -> str | None:
    try:
        return Secret.resolve(config.get("secret"), context().settings.config_dir).get() or None
    except (SecretError, TypeError, ValueError):
        return None


def webhook_signature(secret: str, timestamp: str, delivery: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<delivery>.<body>")>``."""
    signed = f"{timestamp}.{delivery}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _webhook_header(name: str, pattern: re.Pattern[str], what: str) -> str:
    value = request.headers.get(name, "").strip()
    if not pattern.match(value):
        raise GatewayError(400, "invalid_webhook_header", f"{name} is required: {what}")
    return value


@bp.post("/triggers/<trigger_id>/webhook")
@public
@raw_body
@document_request(WebhookPayload)
@validate_response(FireResponse, 202)
@document_response(ErrorResponse, 503)
async def webhook(trigger_id: str) -> Any:
    """Webhook trigger (public), signed: ``X-Gateway-Signature: sha256=<hex>`` is the
    HMAC-SHA256, keyed with the webhook's secret, of ``<timestamp>.<delivery>.<raw body>``
    (``X-Gateway-Timestamp``, unix seconds within ``tolerance_seconds`` of now, default
    300; ``X-Gateway-Delivery``, the delivery id). The JSON body is the run input; a
    repeated delivery id returns the first run (``duplicate_delivery``). 400 a missing or
    malformed timestamp or delivery id; 401 a bad signature or a timestamp out of
    tolerance (nothing started); 404 unknown webhook; 503 while paused."""
    kind, _, name = trigger_id.partition(":")
    config = webhooks().get(name) if kind == "webhook" else None
    secret = _webhook_secret(config) if config is not None else None
    data = await request.get_data(as_text=False)
    raw = data if isinstance(data, bytes) else data.encode()
    if config is None or secret is None:
        raise GatewayError(404, "trigger_not_found", f"no webhook trigger {trigger_id!r}")
    timestamp = _webhook_header(WEBHOOK_TIMESTAMP, _TIMESTAMP, "unix seconds (digits)")
    delivery = _webhook_header(
        WEBHOOK_DELIVERY, _DELIVERY_ID, "1 to 200 visible ASCII characters other than '.'"
    )
    sent = request.headers.get(WEBHOOK_SIGNATURE, "")
    expected = webhook_signature(secret, timestamp, delivery, raw)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise GatewayError(
            401,
            "invalid_signature",
            f"{WEBHOOK_SIGNATURE} does not match the timestamp, delivery id and body",
        )
    tolerance = webhook_tolerance(config)
    if abs(time.time() - int(timestamp)) > tolerance:
        raise GatewayError(
            401,
            "stale_timestamp",
            f"{WEBHOOK_TIMESTAMP} is more than {tolerance:g} seconds from the gateway's clock",
        )
    pipeline = pipeline_or_404_as_trigger(str(config.get("pipeline", "")), trigger_id)
    try:
        body = parse_json(raw) if raw.strip() else {}
    except InvalidJSON as exc:
        raise GatewayError(
            400, "invalid_json", f"the webhook body is not valid JSON: {exc}"
        ) from None
    run_id, created = await engine_of().start_run(
        pipeline,
        body,
        trigger={"type": "webhook", "trigger_id": trigger_id, "delivery": delivery},
        created_by=trigger_id,
        owner=trigger_id,  # webhook:<name>: read-all holders see its runs
        idempotency_key=webhook_key(name, delivery),
    )
    outcome = "fired" if created else "duplicate_delivery"
    return FireResponse(trigger_id=trigger_id, outcome=outcome, runId=run_id), 202


def pipeline_or_404_as_trigger(pipeline_id: str, trigger_id: str) -> Pipeline:
    pipeline = catalog().get(pipeline_id)
    if pipeline is None:
        raise GatewayError(404, "trigger_not_found", f"no trigger {trigger_id!r}")
    return pipeline


@bp.get("/schedules")
@validate_response(ScheduleList)
async def list_schedules() -> ScheduleList:
    """The caller's schedules (every one with ``allow_pipeline_read_all``) with their next
    and last fire, the last outcome, and whether they are suspended."""
    async with context().store.read() as conn:
        rows = (await conn.execute(_visible_schedules())).all()
    return ScheduleList(schedules=[_schedule_record(r) for r in rows])


@bp.post("/schedules")
@requires_gate(GATE_RUN)
@document_request(ScheduleRequest)
@validate_response(ScheduleRecord, 201)
@document_response(ErrorResponse, 409)
@document_response(ErrorResponse, 422)
async def add_schedule() -> Any:
    """Add a schedule: ``cron`` (5 fields, in ``timezone``) or ``interval_seconds``;
    ``overlap`` skip, queue or cancel. 404 unknown pipeline; 422 bad cron, time zone or
    input; 409 an existing id."""
    body = await body_of(ScheduleRequest)
    pipeline = pipeline_or_404(body.pipeline_id)
    if (body.cron is None) == (body.interval_seconds is None):
        raise GatewayError(
            422,
            "validation_failed",
            "give exactly one of cron and interval_seconds",
            details={"param": "cron"},
        )
    if body.cron is not None and (len(body.cron.split()) != 5 or not croniter.is_valid(body.cron)):
        raise GatewayError(
            422,
            "validation_failed",
            "cron: not a valid 5-field cron expression",
            details={"param": "cron"},
        )
    try:
        ZoneInfo(body.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise GatewayError(
            422,
            "validation_failed",
            f"timezone: unknown IANA time zone {body.timezone!r}",
            details={"param": "timezone"},
        ) from None
    run_input = engine_of().validate_input(pipeline, body.input)
    now = now_ms()
    values = {
        "id": body.id or uuid.uuid4().hex[:12],
        "pipeline_id": pipeline.id,
        "cron": body.cron,
        "interval_seconds": body.interval_seconds,
        "timezone": body.timezone,
        "input": run_input,
        "overlap": body.overlap,
        "created_by": current_principal().name,
        "owner": owner_key(current_principal()),
        "created_ms": now,
        "next_fire_ms": schedules_mod.next_after(
            body.cron, body.timezone, body.interval_seconds, now
        ),
        "last_fire_ms": None,
        "last_outcome": None,
        "last_run_id": None,
        "missed": 0,
    }
    store = context().store
    async with store.write() as conn:
        inserted = await conn.execute(store.dialect.insert_ignore(schedules).values(**values))
    if not inserted.rowcount:
        raise GatewayError(409, "schedule_exists", f"schedule {values['id']!r} already exists")
    engine_of().due_at(schedule_ms=int(values["next_fire_ms"]))
    return ScheduleRecord(**values), 201


@bp.delete("/schedules/<schedule_id>")
@requires_gate(GATE_RUN)
@validate_response(Deleted)
async def delete_schedule(schedule_id: str) -> Deleted:
    """Remove a schedule (its runs go on); 404 if there is none (or the caller cannot see
    it); 403 another's without ``allow_pipeline_act_all``."""
    await _schedule_row(schedule_id)
    async with context().store.write() as conn:
        result = await conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
    if not result.rowcount:
        raise GatewayError(404, "schedule_not_found", f"no schedule {schedule_id!r}")
    return Deleted(deleted=schedule_id)


__all__ = ["GATE_ACT_ALL", "GATE_APPROVE", "GATE_READ_ALL", "GATE_RUN", "Engine", "bp"]
