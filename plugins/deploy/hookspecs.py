"""The hook the deploy plugin declares: kinds of agents that can be deployed and
stopped. Kinds implement ``plugins.deploy.contract.AgentKind``."""

from __future__ import annotations

from host.api import Register, registry_hookspec


@registry_hookspec("agent_kinds", "agent kind")
def gateway_register_agent_kinds(register: Register) -> None:
    """Register kinds of agents for ``POST /gateway/deploy`` and
    ``POST /gateway/agents/{agent_id}/stop``: ``register(kind, agent_kind)``.

    :param register: ``register(kind: str, agent_kind: contract.AgentKind)``.

    All implementations are called; a kind registered twice fails start-up.
    """
