"""Built-in jobs plugin: one view of all background work (``/gateway/jobs``), cancelling
it for real, and the WebSocket kinds for job and run status. Work sources plug in with
``gateway_register_job_sources`` (``hookspecs.py``, contract in ``contract.py``); the
pipelines plugin's runs are a built-in source, through its service."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import Register, Settings, Store, context, hookimpl, provide, withdraw
from plugins.jobs import hookspecs, listing, routes, ws
from plugins.jobs.contract import JobsAPI
from plugins.jobs.pipeline_source import PipelineRuns
from plugins.jobs.service import JobsService


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(listing.GATE_CANCEL, "cancel background jobs (one's own; others' with act-all)")
    register(listing.GATE_READ_ALL, "see every principal's jobs")
    register(listing.GATE_ACT_ALL, "cancel every principal's jobs")


@hookimpl
async def gateway_startup(app: Quart) -> None:
    provide(JobsAPI, JobsService(context(app)), app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    withdraw(JobsAPI, app=app)


@hookimpl
def gateway_register_job_sources(register: Register) -> None:
    register("pipelines", PipelineRuns())


@hookimpl
def gateway_register_ws_kinds(register: Register) -> None:
    for kind, handler in ws.KINDS.items():
        register(kind, handler)


@hookimpl
def gateway_status(app: Any) -> dict[str, Any]:
    return {"sources": sorted(context(app).registry("job_sources"))}


@hookimpl
def gateway_validate_config(settings: Settings) -> list[str]:
    # The section has no settings but ``enabled``: a key there is a mistake.
    return [
        f"plugins.jobs.{key}: unknown setting (this plugin has none)"
        for key in sorted(settings.plugin_section("jobs"))
    ]


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    # The jobs stream is a log (cancels): pruned by age and count like the gateway's.
    r = settings.retention
    removed = await store.prune_stream(
        listing.JOBS_STREAM,
        before_ms=r.cutoff_ms(r.events_max_age_days, now_ms),
        keep_last=r.limit(r.events_max_count),
        batch_size=r.batch_size,
        dry_run=dry_run,
    )
    return {"events": removed}
