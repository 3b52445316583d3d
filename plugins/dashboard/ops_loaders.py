"""What the ops sections show without a script: each loader reads a plugin's data
through its typed service (or ``host.api`` for the configuration) as the signed-in
principal, with the gates and ownership of the API it stands for. A refusal (403, or
the plugin off) is shown in its panel instead of the data."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from quart import current_app

from host.api import GatewayError, context, has_service, masked_config, service
from plugins.agents.contract import AgentSessions
from plugins.channels.contract import ChannelsAPI
from plugins.dashboard.websession import WebSession
from plugins.deploy.contract import AgentState
from plugins.jobs.contract import JobsAPI
from plugins.safety.contract import SafetyAPI
from plugins.tools.contract import ToolsAPI
from plugins.training.contract import TrainingAPI

GATE_CONFIG_READ = "allow_gateway_read"  # GET /gateway/config's gate (control plugin)
_POLICY_STATE = ("version", "updated_ms", "updated_by", "floor")


@dataclass(frozen=True)
class Loaded:
    data: Any = None
    error: GatewayError | None = None
    prefill: dict[str, str] | None = None  # form fields to fill in, by Field.prefill


def need(kind: type[Any], plugin: str) -> Any:
    if not has_service(kind):
        raise GatewayError(503, "feature_disabled", f"the {plugin} plugin is off")
    return service(kind)


async def _tools(session: WebSession) -> Loaded:
    listed = await need(ToolsAPI, "tools").list_tools(session.principal)
    rows = [
        {"name": t.name, "plugin": t.plugin, "enabled": t.enabled, "description": t.description}
        for t in listed.tools
    ]
    return Loaded(rows)


async def _tool_stats(session: WebSession) -> Loaded:
    found = await need(ToolsAPI, "tools").stats(session.principal)
    keys = ("name", "calls", "errors", "p50_ms", "p95_ms", "last_error")
    return Loaded([{k: getattr(t, k) for k in keys} for t in found.tools])


async def _jobs(session: WebSession) -> Loaded:
    jobs = await need(JobsAPI, "jobs").list_jobs(session.principal, limit=50)
    rows = [
        {k: j[k] for k in ("id", "kind", "status", "owner", "created_by", "created_ms")}
        for j in (job.model_dump() for job in jobs.jobs)
    ]
    return Loaded(rows)


async def _channels(session: WebSession) -> Loaded:
    return Loaded({"channels": need(ChannelsAPI, "channels").names()})


async def _config(session: WebSession) -> Loaded:
    context().auth.require_gate(session.principal, GATE_CONFIG_READ, "reading the configuration")
    return Loaded(masked_config(current_app))


async def _safety_policy(session: WebSession) -> Loaded:
    policy = (await need(SafetyAPI, "safety").policy(session.principal)).model_dump(mode="json")
    editable = {k: v for k, v in policy.items() if k not in _POLICY_STATE}
    return Loaded(policy, prefill={"policy": json.dumps(editable, indent=2)})


async def _safety_rules(session: WebSession) -> Loaded:
    rules = (await need(SafetyAPI, "safety").rules(session.principal)).model_dump(mode="json")
    return Loaded(rules["rules"])


async def _deployments(session: WebSession) -> Loaded:
    return Loaded(await need(AgentState, "deploy").states(session.principal))


async def _training_status(session: WebSession) -> Loaded:
    status = await need(TrainingAPI, "training").status(session.principal)
    return Loaded(status.model_dump(mode="json"))


async def _training_rollouts(session: WebSession) -> Loaded:
    found = await need(TrainingAPI, "training").rollouts(session.principal, limit=50)
    keep = ("id", "source", "pipeline_id", "model", "outcome", "owner", "reward", "created_ms")
    return Loaded([{k: r.model_dump(mode="json")[k] for k in keep} for r in found.rollouts])


async def _agent_sessions(session: WebSession) -> Loaded:
    found = await need(AgentSessions, "agents").list_sessions(session.principal, None, None, 100)
    keep = ("id", "agent_id", "state", "owner", "workspace", "created_ms", "closed_ms")
    return Loaded([{k: s.model_dump(mode="json")[k] for k in keep} for s in found])


LOADERS: dict[str, Callable[[WebSession], Awaitable[Loaded]]] = {
    "tools": _tools,
    "tool_stats": _tool_stats,
    "jobs": _jobs,
    "channels": _channels,
    "config": _config,
    "safety_policy": _safety_policy,
    "safety_rules": _safety_rules,
    "deployments": _deployments,
    "training_status": _training_status,
    "training_rollouts": _training_rollouts,
    "agent_sessions": _agent_sessions,
}


async def load_panels(session: WebSession, names: Iterable[str]) -> dict[str, Loaded]:
    out: dict[str, Loaded] = {}
    for name in names:
        try:
            out[name] = await LOADERS[name](session)
        except GatewayError as exc:
            out[name] = Loaded(error=exc)
    return out
