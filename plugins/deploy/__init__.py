"""Built-in deploy plugin: agents (pipelines; ACP agents when a plugin registers their
kind) go live at a version (``POST /gateway/deploy``, versions and switches stored,
rollback by the same route) and stop (``POST /gateway/agents/{agent_id}/stop``: running
work cancelled, new work refused until deployed again). Kinds plug in with
``gateway_register_agent_kinds`` (``hookspecs.py``, ``contract.py``)."""

from __future__ import annotations

from typing import Any

from host.api import GatewayContext, Register, Settings, hookimpl
from plugins.deploy import deployments, hookspecs, routes, tables
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
