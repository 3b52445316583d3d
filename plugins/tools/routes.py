"""``GET /gateway/tools`` and ``GET /gateway/tools/stats``."""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_response

from host.api import GatewayContext, context, describe_tools, requires_gate
from plugins.tools.config import config_of
from plugins.tools.stats import StatsRecorder, record_of

bp = Blueprint("tools", __name__)
GATE_READ = "allow_tools_read"
RECORDER_KEY = "tools.stats"


class ToolRecord(BaseModel):
    name: str
    description: str
    parameters: dict[str, object] = Field(description="JSON schema of the arguments")
    plugin: str = Field(description="the plugin that registered it")
    enabled: bool = Field(description="false when listed in [plugins.tools] disabled")


class ToolList(BaseModel):
    tools: list[ToolRecord]


class ToolStats(BaseModel):
    name: str
    registered: bool
    calls: int
    errors: int
    error_rate: float
    mean_ms: float | None
    p50_ms: float | None = Field(description="upper bound of the bucket: within 20 %")
    p95_ms: float | None
    last_call_ms: int | None
    last_error: str | None


class ToolStatsList(BaseModel):
    tools: list[ToolStats]


def recorder(gateway: GatewayContext) -> StatsRecorder:
    found: StatsRecorder = gateway.extras[RECORDER_KEY]
    return found


def inventory(gateway: GatewayContext) -> ToolList:
    """Every registered tool (``GET /gateway/tools``; the ``ToolsAPI`` service)."""
    disabled = set(config_of(gateway).disabled)
    return ToolList(
        tools=[
            ToolRecord(
                name=t.name,
                description=t.description,
                parameters=t.parameters,
                plugin=t.plugin,
                enabled=t.name not in disabled,
            )
            for t in describe_tools(gateway)
        ]
    )


async def usage(gateway: GatewayContext) -> ToolStatsList:
    """Every tool's call statistics (``GET /gateway/tools/stats``; the ``ToolsAPI``)."""
    registered = set(gateway.registry("tools"))
    totals = await recorder(gateway).totals(registered)
    return ToolStatsList(
        tools=[
            ToolStats(**record_of(name, tally, name in registered))
            for name, tally in sorted(totals.items())
        ]
    )


@bp.get("/gateway/tools")
@requires_gate(GATE_READ)
@validate_response(ToolList)
async def list_tools() -> ToolList:
    """Every registered tool: name, description, JSON schema of its arguments, the plugin
    that registered it, and whether it is enabled."""
    return inventory(context())


@bp.get("/gateway/tools/stats")
@requires_gate(GATE_READ)
@validate_response(ToolStatsList)
async def tool_stats() -> ToolStatsList:
    """Calls, errors and p50/p95 latency per tool, over every call made through the
    tool registry (pipelines, agents) on every worker and replica, kept across restarts
    (this worker's latest calls included before they are written)."""
    return await usage(context())
