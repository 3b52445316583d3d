"""``/schedules``: cron and interval schedules that start runs (``schedules.py``)."""

from __future__ import annotations

from typing import Any

from quart_schema import document_request, document_response, validate_response

from host.api import ErrorResponse, current_principal, requires_gate
from plugins.pipelines.gates import GATE_RUN
from plugins.pipelines.models import Deleted, ScheduleList, ScheduleRecord, ScheduleRequest
from plugins.pipelines.routes.common import body_of, bp, pipelines_api


@bp.get("/schedules")
@validate_response(ScheduleList)
async def list_schedules() -> ScheduleList:
    """The caller's schedules (every one with ``allow_pipeline_read_all``) with their next
    and last fire, the last outcome, and whether they are suspended."""
    return await pipelines_api().list_schedules(current_principal())


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
    return await pipelines_api().add_schedule(body, current_principal()), 201


@bp.delete("/schedules/<schedule_id>")
@requires_gate(GATE_RUN)
@validate_response(Deleted)
async def delete_schedule(schedule_id: str) -> Deleted:
    """Remove a schedule (its runs go on); 404 if there is none (or the caller cannot see
    it); 403 another's without ``allow_pipeline_act_all``."""
    await pipelines_api().remove_schedule(schedule_id, current_principal())
    return Deleted(deleted=schedule_id)
