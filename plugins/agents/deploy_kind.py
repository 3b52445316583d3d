"""ACP agents as deployable agents (kind ``acp`` of the deploy plugin): the agent id is
an ``[agents.<id>]`` id (or a new one), its spec an ``[agents.<id>]`` table (``command``,
``cwd``, ``env``, limits...) validated like the configuration; the deployed spec is what
new sessions of the agent start with. Stopping it closes its open sessions (their agent
processes stop); the deploy plugin stores the stop, and :func:`deployed` refuses new
sessions with 409 ``agent_stopped`` on every replica until it is deployed again."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from host.api import GatewayContext, GatewayError, context, has_service, service
from plugins.agents.config import AGENT_ID, AgentConfig
from plugins.agents.service import OPEN_STATES, AgentSessions
from plugins.agents.tables import sessions

KIND = "acp"


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError(422, "validation_failed", f"{param}: {message}", param=param)


def _sessions(gateway: GatewayContext) -> AgentSessions | None:
    from plugins.agents import routes

    found: AgentSessions | None = gateway.extras.get(routes.SERVICE_KEY)
    return found


async def deployed(app: Any, agent_id: str) -> AgentConfig | None:
    """The agent's deployed spec (None: never deployed, or no deploy plugin: run as
    configured); 409 ``agent_stopped`` while it is stopped."""
    if not context(app).settings.plugin_enabled("deploy"):
        return None
    from plugins.deploy.contract import AgentState

    if not has_service(AgentState, app=app):
        return None
    spec = await service(AgentState, app=app).admit(agent_id, KIND)
    return None if spec is None else AgentConfig.model_validate(spec)


class AcpAgents:
    async def exists(self, gateway: GatewayContext, agent_id: str) -> bool:
        agents = _sessions(gateway)
        return agents is not None and agent_id in agents.agents

    async def validate(
        self, gateway: GatewayContext, agent_id: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        if not AGENT_ID.match(agent_id):
            raise _invalid("agent_id", "an ACP agent id is 1 to 100 letters, digits, _ . -")
        try:
            config = AgentConfig.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise _invalid(f"spec.{where}" if where else "spec", first["msg"]) from None
        dumped: dict[str, Any] = config.model_dump(mode="json")
        return dumped

    async def stop(
        self, gateway: GatewayContext, agent_id: str, by: str, reason: str | None
    ) -> list[str]:
        agents = _sessions(gateway)
        if agents is None:
            return []
        closed: list[str] = []
        while True:  # until a pass finds nothing open: a session opened meanwhile is caught
            stmt = sa.select(sessions.c.id).where(
                sessions.c.agent_id == agent_id, sessions.c.state.in_(OPEN_STATES)
            )
            async with gateway.store.read() as conn:
                found = [i for i in (await conn.execute(stmt)).scalars() if i not in closed]
            if not found:
                return closed
            for session_id in found:
                await agents.close(session_id, None, reason or f"agent {agent_id} stopped by {by}")
                closed.append(session_id)
