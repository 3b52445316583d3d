"""Built-in deploy plugin: agents (pipelines; ACP agents when a plugin registers their
kind) go live at a version (``POST /gateway/deploy``, versions and switches stored,
rollback by the same route) and stop (``POST /gateway/agents/{agent_id}/stop``: running
work cancelled, new work refused until deployed again). Kinds plug in with
``gateway_register_agent_kinds`` (``hookspecs.py``, ``contract.py``)."""

from __future__ import annotations

from typing import Any

from host.api import (
    FrameError,
    GatewayContext,
    Register,
    Settings,
    Store,
    WsContext,
    context,
    hookimpl,
    provide,
    withdraw,
)
from plugins.deploy import deployments, hookspecs, routes, tables
from plugins.deploy.contract import AgentState
from plugins.deploy.pipeline_agents import PipelineAgents, loaded_version


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE, "deploy, roll back and stop agents (they serve everyone)")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_register_agent_kinds(register: Register) -> None:
    register("pipeline", PipelineAgents())


@hookimpl
async def gateway_admit_run(
    gateway: GatewayContext, pipeline_id: str, trigger: dict[str, Any]
) -> None:
    await deployments.admit(gateway, pipeline_id, "pipeline", loaded_version(gateway, pipeline_id))


async def agents_status(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    """``agents.status.request``: every deployed or stopped agent's state (``allow_deploy``)."""
    if not ws.principal.has_gate(routes.GATE):
        raise FrameError("policy_gate_denied", f"needs the {routes.GATE} gate", ws.request_id)
    return {"agents": await deployments.states(context(ws.app))}


@hookimpl
async def gateway_startup(app: Any) -> None:
    provide(AgentState, AgentState(context(app)), app=app)


@hookimpl
async def gateway_shutdown(app: Any) -> None:
    withdraw(AgentState, app=app)


@hookimpl
def gateway_register_ws_kinds(register: Register) -> None:
    register("agents.status.request", agents_status)


@hookimpl
def gateway_validate_config(settings: Settings) -> list[str]:
    # The section has no settings but ``enabled``: a key there is a mistake.
    return [
        f"plugins.deploy.{key}: unknown setting (this plugin has none)"
        for key in sorted(settings.plugin_section("deploy"))
    ]


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    # The deploy stream is a log, pruned by age and count like the gateway's; the
    # deploy_switches table keeps every agent's history.
    r = settings.retention
    removed = await store.prune_stream(
        deployments.EVENTS,
        before_ms=r.cutoff_ms(r.events_max_age_days, now_ms),
        keep_last=r.limit(r.events_max_count),
        batch_size=r.batch_size,
        dry_run=dry_run,
    )
    return {"events": removed}
