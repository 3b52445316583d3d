"""``GET /gateway/ws``: the seed-004 WebSocket protocol, with the host's kinds."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, current_app, websocket

from host.api import WsContext, current_principal, serve_gateway_socket, ws_capabilities
from plugins.control.status import status_report

bp = Blueprint("control_ws", __name__)


@bp.websocket("/gateway/ws")
async def gateway_ws() -> None:
    """WebSocket: {schema_version, request_id, kind, payload} frames; heartbeats."""
    await serve_gateway_socket(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        websocket,
        current_principal(),
    )


async def capabilities(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    return ws_capabilities(ws.app)


async def gateway_status(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    return await status_report(ws.app, ws.principal)
