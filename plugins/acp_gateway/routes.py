"""``WS /acp``: the gateway as an ACP endpoint for remote editors.

Everything is decided before the socket is accepted, so a refused caller gets a plain
HTTP error (the JSON envelope) and no agent starts: the guard's authentication and the
``allow_agent_sessions`` gate, then the agent (``?agent=<id>``, configured and allowed by
``[plugins.acp_gateway] agent_gates``), then the caller's WebSocket cap (the host's,
shared with ``/gateway/ws``). The accepted socket carries ``Acp-Connection-Id``; its
messages go to an ``acp`` ``AgentSideConnection`` over the framing adapter
(``transport.py``)."""

from __future__ import annotations

import uuid
from typing import Any

from acp import AgentSideConnection
from quart import Blueprint, current_app, websocket
from quart_schema import document_response

from host.api import (
    ErrorResponse,
    GatewayError,
    context,
    credential_watch,
    current_principal,
    has_service,
    requires_gate,
    service,
)
from plugins.acp_gateway.config import configured
from plugins.acp_gateway.relay import GatewayAgent, audit
from plugins.acp_gateway.transport import CLOSE_GOING_AWAY, WebSocketTransport
from plugins.agents.contract import AGENT_GATE, AgentSessions

CONNECTION_ID_HEADER = "Acp-Connection-Id"

bp = Blueprint("acp_gateway", __name__)


def _choose_agent(sessions: AgentSessions) -> str:
    agent_id = websocket.args.get("agent", "")
    if not agent_id:
        known = ", ".join(sessions.agent_ids()) or "none"
        raise GatewayError(
            400,
            "invalid_request",
            f"name the agent in the query: /acp?agent=<id> (configured: {known})",
            details={"param": "agent"},
        )
    if agent_id not in sessions.agents:
        raise GatewayError(404, "agent_not_found", f"no agent {agent_id!r} is configured")
    return agent_id


@bp.websocket("/acp")
@requires_gate(AGENT_GATE)
async def acp_socket() -> None:
    """WebSocket: ACP (JSON-RPC, one message per text frame) relayed to ``?agent=<id>``."""
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    gateway = context(app)
    principal = current_principal()
    if not has_service(AgentSessions, app=app):
        raise GatewayError(503, "agents_unavailable", "the agents plugin is not running")
    sessions = service(AgentSessions, app=app)
    config = configured(gateway.settings)
    agent_id = _choose_agent(sessions)
    gate = config.agent_gates.get(agent_id)
    if gate is not None and not principal.has_gate(gate):
        raise GatewayError(
            403,
            "policy_gate_denied",
            f"agent {agent_id!r} requires policy gate {gate!r}, which {principal.name!r} lacks",
        )
    # The host's WebSocket cap (server.max_websockets_per_principal), shared with
    # /gateway/ws: past it, 429 too_many_websockets before the accept.
    slot = gateway.lifecycle.websocket_slots.acquire(principal.key)
    gateway.lifecycle.websocket_opened()
    connection_id = "acpc_" + uuid.uuid4().hex
    try:
        await websocket.accept(headers={CONNECTION_ID_HEADER: connection_id})
        watch = credential_watch(websocket, principal, websocket=True)
        # The socket itself, not the context-local proxy: the agent's updates are sent
        # from the agent's reader task, whose context may be another connection's.
        socket = websocket._get_current_object()  # type: ignore[attr-defined]
        transport = WebSocketTransport(
            socket,
            config.max_frame_bytes,
            still_valid=watch.valid if watch is not None else None,
            draining=lambda: gateway.hub.draining,
        )
        relay = GatewayAgent(gateway, sessions, principal, agent_id, connection_id, transport)
        conn = AgentSideConnection(relay, transport, listening=False)
        await relay.record(
            None, "acp.connected", {"audit": audit("acp.connect", agent_id, principal.name)}
        )
        try:
            await conn.listen()
        finally:
            attached = sorted(relay.attached)
            relay.detach_all()
            if gateway.hub.draining and not transport.ending.is_set():
                transport.end(CLOSE_GOING_AWAY, "the gateway is shutting down")
            await transport.close()
            await conn.close()
            await relay.record(
                None,
                "acp.disconnected",
                {
                    "sessions": attached,
                    "close_code": transport.close_code,
                    "close_reason": transport.close_reason,
                },
            )
    finally:
        slot.release()
        gateway.lifecycle.websocket_closed()


@bp.post("/acp")
@requires_gate(AGENT_GATE)
@document_response(ErrorResponse, 501)
async def acp_http() -> dict[str, Any]:
    """The RFD's streamable HTTP transport: not served yet (501); use the WebSocket."""
    raise GatewayError(
        501,
        "not_implemented",
        "ACP over streamable HTTP is not supported yet: connect a WebSocket to /acp?agent=<id>",
    )
