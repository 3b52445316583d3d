"""Built-in tools plugin: the tool inventory and call statistics routes, the built-in
tools, and the switch that turns tools off. Hooks only; the rest beside it."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from quart import Quart

from host.api import (
    GatewayContext,
    Register,
    Settings,
    Tool,
    ToolCall,
    ToolError,
    context,
    hookimpl,
    provide,
    withdraw,
)
from plugins.tools import approvals, routes, stats
from plugins.tools.builtin import BUILTIN_TOOLS
from plugins.tools.config import config_of, problems
from plugins.tools.service import ToolsAPI


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE_READ, "list the registered tools and their call statistics")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in (*stats.MIGRATIONS, *approvals.MIGRATIONS):
        register(migration)


@hookimpl
def gateway_register_tools(register: Register) -> None:
    for name, tool in BUILTIN_TOOLS.items():
        register(name, tool)


@hookimpl
def gateway_before_tool_call(gateway: GatewayContext, name: str) -> None:
    if name in config_of(gateway).disabled:
        raise ToolError("tool_disabled", f"tool {name!r} is disabled ([plugins.tools] disabled)")


# Both hooks run on every tool call: synchronous, they hand back a coroutine (awaited by
# the host) only when there is approval work, so a call no policy holds costs no task.
@hookimpl
def gateway_tool_approval(
    gateway: GatewayContext, name: str, args: dict[str, Any], caller: dict[str, Any], tool: Tool
) -> Awaitable[None] | None:
    return approvals_of(gateway).admit(name, args, caller, tool)


@hookimpl
def gateway_on_tool_call(gateway: GatewayContext, call: ToolCall) -> Awaitable[None] | None:
    recorder: stats.StatsRecorder | None = gateway.extras.get(routes.RECORDER_KEY)
    if recorder is not None:
        recorder.record(call)
    if "approval_id" in call.caller:
        return approvals_of(gateway).observe(call)
    return None


APPROVALS_KEY = "tools.approvals"


def approvals_of(gateway: GatewayContext) -> approvals.ToolApprovals:
    found: approvals.ToolApprovals | None = gateway.extras.get(APPROVALS_KEY)
    if found is None:
        found = gateway.extras[APPROVALS_KEY] = approvals.ToolApprovals(gateway)
    return found


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    recorder = stats.StatsRecorder(ctx.store, config_of(ctx).flush_seconds)
    ctx.extras[routes.RECORDER_KEY] = recorder
    recorder.start()
    provide(approvals.ToolApprovals, approvals_of(ctx), app=app)
    provide(ToolsAPI, ToolsAPI(ctx), app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    withdraw(approvals.ToolApprovals, app=app)
    withdraw(ToolsAPI, app=app)
    # Before the store closes: the counts of the last calls are written, not lost.
    recorder: stats.StatsRecorder | None = context(app).extras.pop(routes.RECORDER_KEY, None)
    if recorder is not None:
        await recorder.stop()


@hookimpl
def gateway_validate_config(settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    ctx = context(app)
    recorder: stats.StatsRecorder | None = ctx.extras.get(routes.RECORDER_KEY)
    return {
        "tools": len(ctx.registry("tools")),
        "disabled": list(config_of(ctx).disabled),
        "calls_pending_write": sum(t.calls for t in recorder.pending.values()) if recorder else 0,
    }
