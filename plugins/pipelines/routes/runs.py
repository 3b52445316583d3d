"""``/runs``: run records, their event streams, and resuming, approving, denying and
cancelling a run."""

from __future__ import annotations

from quart import Response, request
from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_response,
)

from host.api import (
    ErrorResponse,
    EventPage,
    context,
    current_principal,
    document_stream,
    requires_gate,
    stream_response,
)
from plugins.pipelines.gates import GATE_APPROVE, GATE_RUN
from plugins.pipelines.models import (
    DecisionRequest,
    ResumeRequest,
    RunList,
    RunQuery,
    RunRecord,
)
from plugins.pipelines.routes.common import body_of, bp, pipelines_api
from plugins.pipelines.runs import TERMINAL_EVENTS, stream_of


@bp.get("/runs")
@validate_querystring(RunQuery)
@validate_response(RunList)
async def list_runs(query_args: RunQuery) -> RunList:
    """Runs, newest first; filter by pipeline, status and creation time; page with
    ``?before=`` (the previous page's ``next_before``)."""
    return await pipelines_api().list_runs(query_args, current_principal())


@bp.get("/runs/<run_id>")
@validate_response(RunRecord)
async def get_run(run_id: str) -> RunRecord:
    """The run record: input, output, error, per-step results with timings, what it waits
    for. Another principal's run is 404 unless the caller holds ``allow_pipeline_read_all``."""
    return await pipelines_api().record(run_id, current_principal())


@bp.get("/runs/<run_id>/events")
@document_response(EventPage, 200)
@document_stream
async def run_events(run_id: str) -> Response:
    """The run's events: SSE with ``Last-Event-ID`` resume, JSONL, or a JSON page; the
    stream ends after the run's terminal event (a finished run's stream replays and ends)."""
    # 404 for an unknown run, or another's the caller cannot read.
    await pipelines_api().record(run_id, current_principal())
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
    return await pipelines_api().resume(run_id, body.input, current_principal())


@bp.post("/runs/<run_id>/approve")
@requires_gate(GATE_APPROVE)
@document_request(DecisionRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def approve_run(run_id: str) -> RunRecord:
    """Approve the approval gate the run waits at; 409 if it does not wait for an approval."""
    body = await body_of(DecisionRequest)
    return await pipelines_api().decide(run_id, "approved", current_principal(), body.reason)


@bp.post("/runs/<run_id>/deny")
@requires_gate(GATE_APPROVE)
@document_request(DecisionRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def deny_run(run_id: str) -> RunRecord:
    """Deny the approval gate the run waits at (the step fails); 409 if not waiting."""
    body = await body_of(DecisionRequest)
    return await pipelines_api().decide(run_id, "denied", current_principal(), body.reason)


@bp.post("/runs/<run_id>/cancel")
@requires_gate(GATE_RUN)
@document_request(DecisionRequest)
@validate_response(RunRecord)
@document_response(ErrorResponse, 409)
async def cancel_run(run_id: str) -> RunRecord:
    """Cancel a run that has not finished; 409 if it already has."""
    body = await body_of(DecisionRequest)
    return await pipelines_api().cancel(run_id, current_principal(), body.reason)
