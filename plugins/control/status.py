"""The gateway status report, shared by ``GET /gateway/status`` and the WS kind: liveness
for every caller, the details (counters, plugins, store) only for ``allow_gateway_read``."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import GATEWAY_VERSION, Principal, context

# Operator views: the gateway's events, configuration, plugins and status details.
GATE_READ = "allow_gateway_read"


async def status_report(app: Quart, principal: Principal) -> dict[str, Any]:
    ctx = context(app)
    settings = ctx.settings
    if not principal.has_gate(GATE_READ):
        # Liveness, and who the caller is (its own name, kind and gates): nothing of others.
        return {
            "service": "agent-gateway",
            "version": GATEWAY_VERSION,
            "state": await ctx.lifecycle.state(),
            "auth": {"mode": settings.auth.mode, "principal": principal.as_dict()},
        }
    counts = await ctx.store.auth_session_counts()
    plugin_status = {
        plugin: result
        for plugin, result in await ctx.plugins.call_async(
            "gateway_status", app=app, log_errors=True
        )
        if result is not None
    }
    return {
        "service": "agent-gateway",
        "version": GATEWAY_VERSION,
        "state": await ctx.lifecycle.state(),
        "uptime_seconds": ctx.lifecycle.uptime_seconds,
        "started_unix_ms": ctx.lifecycle.started_ms,
        "auth": {
            "mode": settings.auth.mode,
            "session_ttl_seconds": settings.auth.session_ttl_seconds,
            **counts,
            "auth_failures": ctx.auth.failures,
            "rate_limited_requests": ctx.auth.rate_limited,
            "principal": principal.as_dict(),
        },
        "plugins": [
            {"name": p["name"], "enabled": p["enabled"], "source": p["source"]}
            for p in ctx.plugins.plugin_list()
        ],
        "plugin_status": plugin_status,
        "store": {
            "dialect": ctx.store.dialect.name,
            "state_dir": str(settings.state_dir),
            "schema_versions": await ctx.store.schema_versions(),
        },
        "streams": {"open": ctx.hub.open_streams},
        "gateway": {
            "status_endpoint": "/gateway/status",
            "ws_endpoint": "/gateway/ws",
            "auth_bootstrap_endpoint": "/gateway/auth/bootstrap",
            "auth_session_endpoint": "/gateway/auth/session",
            "metrics_endpoint": "/metrics",
            "openapi_endpoint": "/openapi.json",
        },
    }
