"""The pipelines plugin's runs as jobs: asynchronous runs (``pipeline_run``) and the runs
schedules fire (``schedule_fire``), paged by the run's sequence number (its primary key)
through the pipelines plugin's service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from host.api import GatewayContext, GatewayError
from plugins.jobs.contract import Job, JobQuery

if TYPE_CHECKING:
    from plugins.pipelines.contract import PipelinesAPI


def _api(gateway: GatewayContext) -> PipelinesAPI | None:
    """The pipelines plugin's service; None when that plugin is off or not started (its
    package is imported only when it is on)."""
    if not gateway.settings.plugin_enabled("pipelines"):
        return None
    from plugins.pipelines.contract import PipelinesAPI

    if not gateway.services.has(PipelinesAPI):
        return None
    api: PipelinesAPI = gateway.services.get(PipelinesAPI)
    return api


def _kind(trigger: dict[str, Any]) -> str:
    return "schedule_fire" if trigger.get("type") == "schedule" else "pipeline_run"


def _job(api: PipelinesAPI, n: int, run: Any) -> Job:
    pipeline = api.pipeline(run.pipeline_id)
    total = len(pipeline.steps) if pipeline is not None else None
    detail: dict[str, Any] = {
        "pipeline_id": run.pipeline_id,
        "trigger": run.trigger.get("type"),
    }
    if run.trigger.get("schedule_id"):
        detail["schedule_id"] = run.trigger["schedule_id"]
    if run.waiting_for:
        detail["waiting_for"] = run.waiting_for.get("type")
    if run.paused_at:
        detail["paused_at"] = run.paused_at
    return Job(
        native_id=run.id,
        kind=_kind(run.trigger),
        status=run.status,
        owner=run.owner,
        created_ms=run.created_ms,
        position=str(n),
        started_ms=run.started_ms,
        finished_ms=run.finished_ms,
        progress={"done": run.next_step_index, "total": total, "unit": "steps"},
        detail=detail,
        created_by=run.created_by,
    )


class PipelineRuns:
    async def page(self, gateway: GatewayContext, query: JobQuery) -> list[Job]:
        api = _api(gateway)
        if api is None:
            return []
        rows = await api.run_page(
            owner=query.owner,
            statuses=query.statuses,
            before=int(query.after) if query.after else None,
            limit=query.limit,
        )
        return [_job(api, n, run) for n, run in rows]

    async def get(self, gateway: GatewayContext, native_id: str) -> Job | None:
        api = _api(gateway)
        if api is None:
            return None
        try:
            run = await api.record(native_id)
        except GatewayError:
            return None
        return _job(api, 0, run)

    async def cancel(
        self, gateway: GatewayContext, native_id: str, by: str, reason: str | None
    ) -> Job:
        api = _api(gateway)
        if api is None:
            raise GatewayError(503, "service_unavailable", "the pipelines plugin is not running")
        try:
            run = await api.cancel_run(native_id, by, reason)
        except GatewayError as exc:
            if exc.code == "run_finished":
                raise GatewayError(409, "job_finished", exc.message) from None
            raise
        return _job(api, 0, run)
