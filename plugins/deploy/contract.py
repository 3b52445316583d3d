"""What a plugin implements to make its agents deployable (``gateway_register_agent_kinds``,
declared in ``hookspecs.py``), and the ``AgentState`` service other plugins consult.

The deploy plugin stores each agent's versions (its spec: model, settings, ...), which
one is live, and whether the agent is stopped; it switches versions atomically and asks
the kind to validate a spec before anything is stored, and to stop the agent's running
work. A kind refuses new work of a stopped agent by asking :meth:`AgentState.admit`
(409 ``agent_stopped``): the pipelines kind does so through ``gateway_admit_run``."""

from __future__ import annotations

from typing import Any, Protocol

from host.api import GatewayContext, GatewayError, Principal, validation_message

GATE = "allow_deploy"  # the deploy routes' gate


class AgentKind(Protocol):
    async def exists(self, gateway: GatewayContext, agent_id: str) -> bool:
        """Whether ``agent_id`` names an agent of this kind before any deploy (a
        loaded pipeline): it can then be stopped without having been deployed."""
        ...

    async def validate(
        self, gateway: GatewayContext, agent_id: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """The spec as stored; raise ``GatewayError(422, "validation_failed", ...,
        param="spec.<field>")`` for a bad one (nothing is stored)."""
        ...

    async def stop(
        self, gateway: GatewayContext, agent_id: str, by: str, reason: str | None
    ) -> list[str]:
        """Stop the agent's running work for real; the ids of what was stopped."""
        ...


class AgentState:
    """The service (``host.api.service(AgentState)``) a kind asks before starting new
    work of an agent: it reads the stored state, so every replica answers alike."""

    def __init__(self, gateway: GatewayContext) -> None:
        self.gateway = gateway

    async def admit(self, agent_id: str, kind: str) -> dict[str, Any] | None:
        """The agent's live spec (None: never deployed, run as configured); 409
        ``agent_stopped`` while it is stopped."""
        from plugins.deploy import deployments

        return await deployments.live_spec(self.gateway, agent_id, kind)

    async def deploy(self, principal: Principal, body: dict[str, Any]) -> Any:
        """``POST /gateway/deploy`` for ``principal`` (``allow_deploy``: 403): the
        ``AgentRecord``; 400 naming a bad field, 404, 409, 422 as the route."""
        from pydantic import ValidationError

        from plugins.deploy import deployments
        from plugins.deploy.models import DeployRequest

        self.gateway.auth.require_gate(principal, GATE, "deploying an agent")
        body = {k: v for k, v in body.items() if k != "policy_gate"}
        try:
            request = DeployRequest.model_validate(body)
        except ValidationError as exc:
            message, param = validation_message(exc)
            raise GatewayError(400, "invalid_request_body", message, param=param) from None
        return await deployments.deploy(self.gateway, request, principal)

    async def stop(self, principal: Principal, agent_id: str, reason: str | None) -> Any:
        """``POST /gateway/agents/{agent_id}/stop`` for ``principal`` (``allow_deploy``:
        403): the ``AgentRecord``; 404 ``agent_not_found``."""
        from plugins.deploy import deployments

        self.gateway.auth.require_gate(principal, GATE, "stopping an agent")
        return await deployments.stop(self.gateway, agent_id, principal, reason)

    async def states(self, principal: Principal) -> list[dict[str, Any]]:
        """Every agent deployed or stopped (``allow_deploy``: 403): kind, state, live
        version, last change."""
        from plugins.deploy import deployments

        self.gateway.auth.require_gate(principal, GATE, "reading the deployments")
        return await deployments.states(self.gateway)


__all__ = ["AgentKind", "AgentState"]
