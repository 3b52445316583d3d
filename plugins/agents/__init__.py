"""Built-in agents plugin: agent (ACP) sessions of the agents configured in
``[agents.<id>]``, the ``AgentSessions`` service, and the pipeline step kind ``agent``.
Hooks only; routes in ``routes.py``, sessions in ``service.py``, the ACP client in
``runtime.py``."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import Register, Settings, context, hookimpl, provide, withdraw
from plugins.agents import routes, tables
from plugins.agents.config import configured, problems
from plugins.agents.deploy_kind import KIND, AcpAgents
from plugins.agents.gates import GATE_ACT_ALL, GATE_READ_ALL, GATE_WRITE
from plugins.agents.job_source import AgentSessionJobs
from plugins.agents.service import AgentSessions
from plugins.agents.step_kind import AgentKind


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(GATE_WRITE, "open, prompt, resume, close and prune agent (ACP) sessions")
    register(GATE_READ_ALL, "read every principal's agent sessions and their events")
    register(GATE_ACT_ALL, "prompt, resume, close and prune other principals' agent sessions")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl(optionalhook=True)
def gateway_register_step_kinds(register: Register) -> None:
    register("agent", AgentKind())


# The deploy plugin's hook: optional, so a gateway with that plugin off still starts.
@hookimpl(optionalhook=True)
def gateway_register_agent_kinds(register: Register) -> None:
    register(KIND, AcpAgents())


# The jobs plugin's hook: optional, so a gateway with that plugin off still starts.
@hookimpl(optionalhook=True)
def gateway_register_job_sources(register: Register) -> None:
    register("agents", AgentSessionJobs())


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    plugin, agents = configured(ctx.settings)  # an invalid table fails start-up, naming the key
    sessions = AgentSessions(app, plugin, agents)
    ctx.extras[routes.SERVICE_KEY] = sessions
    await sessions.start()
    provide(AgentSessions, sessions, app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    withdraw(AgentSessions, app=app)
    sessions: AgentSessions | None = context(app).extras.pop(routes.SERVICE_KEY, None)
    if sessions is not None:
        await sessions.stop()


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    sessions: AgentSessions | None = context(app).extras.get(routes.SERVICE_KEY)
    if sessions is None:
        return {"agents": []}
    return {
        "agents": sessions.agent_ids(),
        "attached_sessions": len(sessions.pids()),
        "prompting": len(sessions.prompting),
    }
