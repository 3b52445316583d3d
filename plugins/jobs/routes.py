"""``GET /gateway/jobs`` and ``POST /gateway/jobs/{job_id}/cancel``."""

from __future__ import annotations

from pydantic import ValidationError
from quart import Blueprint, request
from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_response,
)

from host.api import (
    ErrorResponse,
    GatewayError,
    context,
    current_principal,
    requires_gate,
    validation_message,
)
from plugins.jobs import listing
from plugins.jobs.models import CancelRequest, JobList, JobRecord, JobsQuery

bp = Blueprint("jobs", __name__)


@bp.get("/gateway/jobs")
@validate_querystring(JobsQuery)
@validate_response(JobList)
async def list_jobs(query_args: JobsQuery) -> JobList:
    """Background work of every job source (pipeline runs, schedule fires, ...), newest
    first: the caller's own jobs, everyone's with ``allow_jobs_read_all``; filter by
    ``status`` (``active``, ``finished`` or one status) and ``source``; page with
    ``?cursor=`` (the previous page's ``next_cursor``)."""
    q = query_args
    return await listing.list_jobs(
        context(),
        current_principal(),
        status=q.status,
        source=q.source,
        limit=q.limit,
        cursor=q.cursor,
    )


@bp.post("/gateway/jobs/<job_id>/cancel")
@requires_gate(listing.GATE_CANCEL)
@document_request(CancelRequest)
@validate_response(JobRecord)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
async def cancel_job(job_id: str) -> JobRecord:
    """Stop a job for real (a pipeline run ends ``cancelled``); 409 ``job_finished`` when
    it had finished; another principal's job is 404, or 403 without
    ``allow_jobs_act_all``."""
    raw = await request.get_json(silent=True) if (await request.get_data()).strip() else {}
    if not isinstance(raw, dict):
        raise GatewayError(400, "invalid_request_body", "the request body must be a JSON object")
    try:
        body = CancelRequest.model_validate(raw)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", message, param=param) from None
    return await listing.cancel(context(), job_id, current_principal(), body.reason)
