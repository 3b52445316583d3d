"""``/pipelines``: the loaded pipelines, and starting a run of one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from quart_schema import document_request, document_response, validate_response

from host.api import ErrorResponse, current_principal, requires_gate
from plugins.pipelines.gates import GATE_RUN
from plugins.pipelines.models import (
    PipelineDetail,
    PipelineList,
    PipelineSummary,
    RunRecord,
    RunRequest,
    StartRequest,
    StartResponse,
)
from plugins.pipelines.routes.common import body_of, bp, idempotency_key, pipelines_api


@bp.get("/pipelines")
@validate_response(PipelineList)
async def list_pipelines() -> PipelineList:
    """Registered pipelines, and pipeline files that failed to load."""
    cat = pipelines_api().catalog()
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
    p = pipelines_api().require_pipeline(pipeline_id)
    return PipelineDetail(
        id=p.id,
        description=p.description,
        version=p.version,
        source=p.source,
        steps=[s.describe() for s in p.steps],
        input_schema=p.input_schema(),
        output_schema=p.output_schema(),
    )


async def _start(
    pipeline_id: str, body_model: type[StartRequest], route: str
) -> tuple[Any, str, bool]:
    """Start a run of ``pipeline_id`` for the caller, from the request: 404 an unknown
    pipeline, then 400 a bad body or ``Idempotency-Key``. Returns the body, the run's id
    and whether it was created."""
    api = pipelines_api()
    pipeline = api.require_pipeline(pipeline_id)
    body = await body_of(body_model)
    run_id, created = await api.start(
        pipeline.id,
        body.input,
        principal=current_principal(),
        trigger={"type": "api", "route": route},
        idempotency_key=idempotency_key(),
    )
    return body, run_id, created


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
    _body, run_id, created = await _start(pipeline_id, StartRequest, "start")
    record = await pipelines_api().record(run_id)
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
    body, run_id, _created = await _start(pipeline_id, RunRequest, "run")
    api = pipelines_api()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(body.wait_seconds):
            async with contextlib.aclosing(api.events(run_id)) as events:
                async for _event in events:
                    pass
    return await api.record(run_id)
