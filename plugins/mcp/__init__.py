"""Built-in MCP plugin: the gateway as a client of the MCP servers in
``[mcp.servers.<name>]`` (their tools join the tool registry as ``<server>.<tool>``),
and as an MCP server on ``/mcp`` (``server.py``: the registry's tools and the pipelines,
per caller). Written like a third-party plugin: ``host.api`` only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart

from host.api import Register, Settings, Store, context, hookimpl
from plugins.mcp import access, routes, server_config
from plugins.mcp.config import problems, servers_of
from plugins.mcp.contract import MCP_STREAM

if TYPE_CHECKING:  # the SDK is imported only where it is used (it costs start-up time)
    from plugins.mcp.client import Supervisor
    from plugins.mcp.server import GatewayMcpServer

SUPERVISORS_KEY = "mcp.supervisors"


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE_MCP, "use the gateway's MCP endpoint (/mcp)")


@hookimpl
def gateway_register_secret_keys(register: Register) -> None:
    register("mcp.servers.*.headers", "HTTP headers sent to an MCP server (credentials)")


@hookimpl
def gateway_validate_config(settings: Settings) -> list[str]:
    found = problems(settings) + server_config.problems(settings) + access.problems(settings)
    found += [
        f"plugins.mcp.{key}: unknown setting (the servers go in [mcp.servers.<name>])"
        for key in sorted(settings.plugin_section("mcp"))
    ]
    return found


async def _start(app: Quart) -> None:
    ctx = context(app)
    configured = servers_of(ctx)
    supervisors: dict[str, Supervisor] = {}
    if configured:
        from plugins.mcp.client import Supervisor

        supervisors = {name: Supervisor(ctx, cfg) for name, cfg in configured.items()}
    ctx.extras[SUPERVISORS_KEY] = supervisors
    for supervisor in supervisors.values():
        supervisor.start()


async def _stop(app: Quart) -> None:
    supervisors: dict[str, Supervisor] = context(app).extras.pop(SUPERVISORS_KEY, {})
    for supervisor in supervisors.values():
        await supervisor.stop()


@hookimpl
async def gateway_startup(app: Quart) -> None:
    # The MCP server (/mcp) starts with its first request (routes.py).
    await _start(app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    # Stdio servers are child processes: they are stopped with the gateway.
    await _stop(app)
    context(app).extras[routes.STOPPED_KEY] = True
    server: GatewayMcpServer | None = context(app).extras.pop(routes.SERVER_KEY, None)
    if server is not None:
        await server.stop()


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    # The mcp stream is a log (one event per tool call): pruned like the gateway's.
    r = settings.retention
    removed = await store.prune_stream(
        MCP_STREAM,
        before_ms=r.cutoff_ms(r.events_max_age_days, now_ms),
        keep_last=r.limit(r.events_max_count),
        batch_size=r.batch_size,
        dry_run=dry_run,
    )
    return {"events": removed}


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> dict[str, Any]:
    # Servers added, removed or changed: reconnect them all (a few ms for loopback).
    await _stop(app)
    await _start(app)
    return {"servers": sorted(context(app).extras[SUPERVISORS_KEY])}


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    ctx = context(app)
    supervisors: dict[str, Supervisor] = ctx.extras.get(SUPERVISORS_KEY, {})
    server: GatewayMcpServer | None = ctx.extras.get(routes.SERVER_KEY)
    return {
        "servers": [s.status() for s in supervisors.values()],
        "server_sessions": server.sessions if server is not None else 0,
    }
