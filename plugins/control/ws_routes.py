"""``GET /gateway/ws``: the seed-004 WebSocket protocol, with the host's kinds."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, websocket

from host.api import WsContext, context, current_principal
from host.auth.principal import Principal
from host.ws import (
    HEARTBEAT_KIND,
    PROTOCOL_VERSION,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    response_kind,
    serve_socket,
)
from plugins.control.status import status_report

bp = Blueprint("control_ws", __name__)


@bp.websocket("/gateway/ws")
async def gateway_ws() -> None:
    """WebSocket: {schema_version, request_id, kind, payload} frames; heartbeats."""
    ctx = context()
    principal = current_principal()

    def check_rate(p: Principal) -> int:
        return ctx.auth.limiter.hit(p.key, p.rate_limit)

    # Before the accept: past the cap the upgrade is refused with 429 too_many_websockets.
    slot = ctx.lifecycle.websocket_slots.acquire(principal.key)
    ctx.metrics.ws_connections.inc()
    ctx.lifecycle.websocket_opened()
    try:
        await serve_socket(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            websocket,
            principal,
            ctx.ws_kinds.items,
            ctx.settings.events.heartbeat_seconds,
            lambda: ctx.lifecycle.draining,
            check_rate,
        )
    finally:
        slot.release()
        ctx.metrics.ws_connections.dec()
        ctx.lifecycle.websocket_closed()


async def capabilities(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    kinds = sorted(context(ws.app).ws_kinds)
    return {
        "schema_version": SCHEMA_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "response_schema_version": SCHEMA_VERSION,
        "supported_request_schema_versions": list(SUPPORTED_SCHEMA_VERSIONS),
        "request_kinds": kinds,
        "response_kinds": sorted({response_kind(k) for k in kinds} | {"error", HEARTBEAT_KIND}),
        "contracts": {
            "heartbeat": {
                "kind": HEARTBEAT_KIND,
                "interval_seconds": context(ws.app).settings.events.heartbeat_seconds,
            }
        },
    }


async def gateway_status(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    return await status_report(ws.app, ws.principal)
