"""Built-in control plugin: health, metrics, status, lifecycle, config, plugins, auth, WS."""

from __future__ import annotations

from host.api import Register, Settings, Store, hookimpl
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


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    # The gateway stream is a log (pause, reload, config, sessions): pruned by age and count.
    r = settings.retention
    removed = await store.prune_stream(
        routes.GATEWAY_STREAM,
        before_ms=r.cutoff_ms(r.events_max_age_days, now_ms),
        keep_last=r.limit(r.events_max_count),
        batch_size=r.batch_size,
        dry_run=dry_run,
    )
    return {"events": removed}
