"""Built-in control plugin: health, metrics, status, lifecycle, config, plugins, auth, WS."""

from __future__ import annotations

from host.api import hookimpl
from host.hookspecs import Register
from host.settings import Settings
from plugins.control import auth_routes, routes, ws_routes


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)
    register(auth_routes.bp)
    register(ws_routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE_CONTROL, "pause, resume and reload the gateway; revoke all sessions")
    register(
        routes.GATE_CONFIG_WRITE, "change the configuration at runtime (PATCH /gateway/config)"
    )
    register(
        routes.GATE_READ,
        "operator views: GET /gateway/config, /gateway/plugins, /gateway/events and the "
        "details of /gateway/status",
    )
    register(routes.GATE_METRICS, "read the Prometheus metrics (GET /metrics)")


@hookimpl
def gateway_register_ws_kinds(register: Register) -> None:
    register("capabilities.request", ws_routes.capabilities)
    register("gateway.status.request", ws_routes.gateway_status)
