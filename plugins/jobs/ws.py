"""``/gateway/ws`` kinds of the jobs plugin: the caller's jobs, one job's status, and the
pipeline runs active now (lifecycle status), with the same ownership as the routes."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from host.api import FrameError, GatewayError, WsContext, context, validation_message
from plugins.jobs import listing
from plugins.jobs.models import JobsQuery


def _query(payload: dict[str, Any], request_id: str) -> JobsQuery:
    try:
        return JobsQuery.model_validate(payload)
    except ValidationError as exc:
        raise FrameError("invalid_payload", validation_message(exc)[0], request_id) from None


async def jobs_list(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    """``jobs.list.request`` ``{status?, source?, limit?, cursor?}``: as ``GET /gateway/jobs``."""
    q = _query(payload, ws.request_id)
    try:
        page = await listing.list_jobs(
            context(ws.app),
            ws.principal,
            status=q.status,
            source=q.source,
            limit=q.limit,
            cursor=q.cursor,
        )
    except GatewayError as exc:
        raise FrameError(exc.code, exc.message, ws.request_id) from None
    return page.model_dump(mode="json")


async def job_status(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    """``job.status.request`` ``{job_id}``: the job, or an ``error`` frame ``job_not_found``."""
    job_id = payload.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise FrameError("invalid_payload", "job_id: required, a string", ws.request_id)
    try:
        name, job = await listing.find(context(ws.app), job_id, ws.principal)
    except GatewayError as exc:
        raise FrameError(exc.code, exc.message, ws.request_id) from None
    return {"job": listing.record(name, job).model_dump(mode="json")}


async def runs_active(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    """``runs.active.request`` ``{limit?}``: the pipeline runs not finished (pending,
    running, waiting, paused) the caller may see, newest first, with their progress."""
    limit = payload.get("limit", 100)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
        raise FrameError("invalid_payload", "limit: an integer from 1 to 200", ws.request_id)
    ctx = context(ws.app)
    if "pipelines" not in ctx.registry("job_sources"):
        return {"runs": []}
    page = await listing.list_jobs(
        ctx, ws.principal, status="active", source="pipelines", limit=limit, cursor=None
    )
    return {
        "runs": [
            {
                "run_id": job.id.partition(":")[2],
                "pipeline_id": job.detail.get("pipeline_id"),
                "status": job.status,
                "owner": job.owner,
                "created_ms": job.created_ms,
                "started_ms": job.started_ms,
                "progress": job.progress,
                "waiting_for": job.detail.get("waiting_for"),
                "paused_at": job.detail.get("paused_at"),
            }
            for job in page.jobs
        ]
    }


KINDS = {
    "jobs.list.request": jobs_list,
    "job.status.request": job_status,
    "runs.active.request": runs_active,
}
