"""``/debug``: breakpoints, the runs paused at them, and releasing a paused run."""

from __future__ import annotations

from typing import Any

from quart_schema import document_request, document_response, validate_response

from host.api import ErrorResponse, current_principal, requires_gate
from plugins.pipelines.gates import GATE_ACT_ALL, GATE_RUN
from plugins.pipelines.models import (
    Breakpoint,
    BreakpointList,
    BreakpointRequest,
    Deleted,
    RunList,
    RunRecord,
)
from plugins.pipelines.routes.common import body_of, bp, pipelines_api


@bp.get("/debug/breakpoints")
@validate_response(BreakpointList)
async def list_breakpoints() -> BreakpointList:
    """Active breakpoints: every run pauses before a step with this id (at any depth)
    or path. The caller's own (every one with ``allow_pipeline_read_all``)."""
    return await pipelines_api().list_breakpoints(current_principal())


@bp.post("/debug/breakpoints")
@requires_gate(GATE_ACT_ALL)
@document_request(BreakpointRequest)
@validate_response(Breakpoint, 201)
async def add_breakpoint() -> Any:
    """Pause every run (however started) before the step ``step_id``: a step id, at any
    depth and in every loop pass, or a step path (``review.approve``, ``rounds[1].reply``);
    optionally of one pipeline only; stored, so it survives restarts."""
    body = await body_of(BreakpointRequest)
    api = pipelines_api()
    return await api.add_breakpoint(body.step_id, body.pipeline_id, current_principal()), 201


@bp.delete("/debug/breakpoints/<step_id>")
@requires_gate(GATE_ACT_ALL)
@validate_response(Deleted)
async def delete_breakpoint(step_id: str) -> Deleted:
    """Remove a breakpoint (runs already paused stay paused until released); 404 if none."""
    await pipelines_api().remove_breakpoint(step_id, current_principal())
    return Deleted(deleted=step_id)


@bp.get("/debug/runs")
@validate_response(RunList)
async def paused_runs() -> RunList:
    """Runs paused at a breakpoint, oldest first: the caller's own (every one with
    ``allow_pipeline_read_all``)."""
    return await pipelines_api().list_paused_runs(current_principal())


@bp.post("/debug/runs/<run_id>/release")
@requires_gate(GATE_RUN)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def release_run(run_id: str) -> RunRecord:
    """Let a run paused at a breakpoint continue (it runs the step it paused before);
    409 if the run is not paused."""
    return await pipelines_api().release(run_id, current_principal())
