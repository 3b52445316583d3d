"""Pipelines as agents (kind ``pipeline``): the agent id is the pipeline id; its spec
may pin the pipeline version that must be loaded for runs to start (``pipeline_version``:
a version loaded later is refused with 409 ``agent_version_mismatch`` until deployed)
and records the ``model`` and ``settings`` it is meant to run with. Stopping it cancels
its unfinished runs; its new runs are refused through ``gateway_admit_run``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from host.api import GatewayContext, GatewayError

if TYPE_CHECKING:
    from plugins.pipelines.contract import PipelinesAPI

ACTIVE = ("pending", "running", "waiting", "paused")
SPEC_KEYS = {"pipeline_version", "model", "settings"}


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


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(422, "validation_failed", f"{param}: {message}", param=param)


class PipelineAgents:
    async def exists(self, gateway: GatewayContext, agent_id: str) -> bool:
        api = _api(gateway)
        return api is not None and api.pipeline(agent_id) is not None

    async def validate(
        self, gateway: GatewayContext, agent_id: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        api = _api(gateway)
        pipeline = api.pipeline(agent_id) if api is not None else None
        if pipeline is None:
            raise _invalid("agent_id", f"no pipeline {agent_id!r} is loaded")
        for key in sorted(set(spec) - SPEC_KEYS):
            raise _invalid(f"spec.{key}", f"unknown (known: {', '.join(sorted(SPEC_KEYS))})")
        pinned = spec.get("pipeline_version")
        if pinned is not None and not isinstance(pinned, str):
            raise _invalid("spec.pipeline_version", "must be a string")
        if pinned is not None and pinned != pipeline.version:
            raise _invalid(
                "spec.pipeline_version",
                f"pipeline {agent_id!r} is loaded at version {pipeline.version!r}, not {pinned!r}",
            )
        model = spec.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            raise _invalid("spec.model", "must be a model name")
        settings = spec.get("settings", {})
        if not isinstance(settings, dict):
            raise _invalid("spec.settings", "must be an object")
        return {"pipeline_version": pinned, "model": model, "settings": settings}

    async def stop(
        self, gateway: GatewayContext, agent_id: str, by: str, reason: str | None
    ) -> list[str]:
        api = _api(gateway)
        if api is None:
            return []
        stopped: list[str] = []
        while True:  # until a pass finds nothing left: a run created meanwhile is caught
            page = await api.run_page(owner=None, statuses=ACTIVE, limit=100, pipeline_id=agent_id)
            fresh = [run for _n, run in page if run.id not in stopped]
            if not fresh:
                return stopped
            for run in fresh:
                try:
                    await api.cancel_run(run.id, by, reason or f"agent {agent_id} stopped")
                except GatewayError as exc:
                    if exc.code != "run_finished":
                        raise
                stopped.append(run.id)


def loaded_version(gateway: GatewayContext, pipeline_id: str) -> str | None:
    api = _api(gateway)
    pipeline = api.pipeline(pipeline_id) if api is not None else None
    return pipeline.version if pipeline is not None else None
