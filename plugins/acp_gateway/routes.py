"""``/acp``: the gateway as an ACP endpoint for remote editors, over WebSocket (``WS
/acp``) and over streamable HTTP (``POST``/``GET``/``DELETE /acp``, ``http_transport.py``).

Everything is decided before the socket is accepted, so a refused caller gets a plain
HTTP error (the JSON envelope) and no agent starts: the guard's authentication and the
``allow_agent_sessions`` gate, then the agent (``?agent=<id>``, configured and allowed by
``[plugins.acp_gateway] agent_gates``), then the caller's WebSocket cap (the host's,
shared with ``/gateway/ws``). The accepted socket carries ``Acp-Connection-Id``; its
messages go to an ``acp`` ``AgentSideConnection`` over the framing adapter
(``transport.py``). Over HTTP the same checks run on the ``initialize`` POST, and every
later request names a connection of its own principal (another's is 404)."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any, cast

from quart import Blueprint, Response, current_app, request, websocket
from quart_schema import document_request, document_response

from host.api import (
    ErrorResponse,
    GatewayContext,
    GatewayError,
    InvalidJSON,
    Principal,
    context,
    credential_watch,
    current_principal,
    document_media_type,
    has_service,
    live_response,
    parse_json,
    requires_gate,
    service,
)
from plugins.acp_gateway.config import configured
from plugins.acp_gateway.http_transport import HttpConnection, HttpConnections
from plugins.acp_gateway.models import AcpAccepted, JsonRpcMessage
from plugins.acp_gateway.transport import CLOSE_GOING_AWAY, WebSocketTransport
from plugins.agents.contract import AGENT_GATE, AgentSessions

if TYPE_CHECKING:  # the ACP package is imported by the first connection (start-up time)
    from plugins.acp_gateway.relay import GatewayAgent

CONNECTION_ID_HEADER = "Acp-Connection-Id"
SESSION_ID_HEADER = "Acp-Session-Id"
HTTP_CONNECTIONS = "acp_gateway.http_connections"
INITIALIZE_TIMEOUT = 30.0
# The methods on an established session: their POST names it in Acp-Session-Id.
SESSION_METHODS = frozenset(
    {
        "session/prompt",
        "session/cancel",
        "session/close",
        "session/set_mode",
        "session/set_config_option",
    }
)

bp = Blueprint("acp_gateway", __name__)


def _sessions(app: Any) -> AgentSessions:
    if not has_service(AgentSessions, app=app):
        raise GatewayError(503, "agents_unavailable", "the agents plugin is not running")
    return service(AgentSessions, app=app)


def _allowed(gateway: GatewayContext, principal: Principal, agent_id: str) -> None:
    gate = configured(gateway.settings).agent_gates.get(agent_id)
    if gate is not None and not principal.has_gate(gate):
        raise GatewayError(
            403,
            "policy_gate_denied",
            f"agent {agent_id!r} requires policy gate {gate!r}, which {principal.name!r} lacks",
        )


def _choose_agent(sessions: AgentSessions, agent_id: str) -> str:
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
    sessions = _sessions(app)
    config = configured(gateway.settings)
    agent_id = _choose_agent(sessions, websocket.args.get("agent", ""))
    _allowed(gateway, principal, agent_id)
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
        from acp import AgentSideConnection

        from plugins.acp_gateway.relay import GatewayAgent, audit

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


def _connections(app: Any) -> HttpConnections:
    found = app.extensions.get(HTTP_CONNECTIONS)
    if found is None:
        found = app.extensions[HTTP_CONNECTIONS] = HttpConnections()
    return cast(HttpConnections, found)


async def close_http_connections(app: Any) -> None:
    found = app.extensions.get(HTTP_CONNECTIONS)
    if found is not None:
        await found.close()


def _connection(app: Any) -> HttpConnection:
    """The caller's connection named by ``Acp-Connection-Id`` (another's reads as unknown)."""
    connection_id = request.headers.get(CONNECTION_ID_HEADER)
    if not connection_id:
        raise GatewayError(
            400,
            "invalid_request",
            f"the {CONNECTION_ID_HEADER} header is required (POST initialize opens a connection)",
            details={"param": CONNECTION_ID_HEADER},
        )
    link = _connections(app).get(connection_id, current_principal().key)
    if link is None:
        raise GatewayError(
            404, "connection_not_found", f"no ACP connection {connection_id!r} (or it ended)"
        )
    return link


def _session_header(link: HttpConnection) -> str | None:
    session_id = request.headers.get(SESSION_ID_HEADER)
    if session_id is not None and not link.knows(session_id):
        raise GatewayError(
            404, "session_not_found", f"no session {session_id!r} on this ACP connection"
        )
    return session_id


@bp.post("/acp")
@requires_gate(AGENT_GATE)
@document_request(JsonRpcMessage)
@document_response(JsonRpcMessage, 200)
@document_response(AcpAccepted, 202)
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 404)
async def acp_http() -> Any:
    """ACP over streamable HTTP: one JSON-RPC message per POST. ``initialize`` (with
    ``?agent=<id>``) opens a connection and answers 200 with the JSON-RPC response and
    ``Acp-Connection-Id``; any other message names that connection (and
    ``Acp-Session-Id`` for a session's methods) and is answered 202: its response comes
    on the connection's or the session's stream (``GET /acp``)."""
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    gateway = context(app)
    if not (request.mimetype or "").startswith("application/json"):
        raise GatewayError(415, "unsupported_media_type", "POST /acp takes application/json")
    try:
        message = parse_json(await request.get_data())
    except InvalidJSON as exc:
        raise GatewayError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise GatewayError(
            400, "invalid_request", "the body is one JSON-RPC 2.0 message (an object)"
        )
    connections = _connections(app)
    connections.sweep(configured(gateway.settings).http_idle_seconds)
    if message.get("method") == "initialize" and "id" in message:
        return await _open_http(app, message)
    link = _connection(app)
    session_id = _session_header(link)
    method = message.get("method")
    if method in SESSION_METHODS and session_id is None:
        raise GatewayError(
            400,
            "invalid_request",
            f"{method} needs the {SESSION_ID_HEADER} header",
            details={"param": SESSION_ID_HEADER},
        )
    await link.deliver(message)
    return {"accepted": True}, 202


async def _open_http(app: Any, message: dict[str, Any]) -> Any:
    gateway = context(app)
    principal = current_principal()
    sessions = _sessions(app)
    agent_id = _choose_agent(sessions, request.args.get("agent", ""))
    _allowed(gateway, principal, agent_id)
    connection_id = "acpc_" + uuid.uuid4().hex
    link = HttpConnection(connection_id, principal.key)
    from acp import AgentSideConnection

    from plugins.acp_gateway.relay import GatewayAgent, audit

    relay = GatewayAgent(gateway, sessions, principal, agent_id, connection_id, link)
    conn = AgentSideConnection(relay, link, listening=False)
    await relay.record(
        None, "acp.connected", {"audit": audit("acp.connect", agent_id, principal.name)}
    )
    connections = _connections(app)
    connections.add(link, asyncio.create_task(_serve_http(connections, link, relay, conn)))
    try:
        answer = await link.call(message, INITIALIZE_TIMEOUT)
    except (TimeoutError, asyncio.CancelledError):
        await connections.end(connection_id)
        raise GatewayError(504, "initialize_timed_out", "initialize was not answered") from None
    return answer, 200, {CONNECTION_ID_HEADER: connection_id}


async def _serve_http(
    connections: HttpConnections, link: HttpConnection, relay: GatewayAgent, conn: Any
) -> None:
    try:
        await conn.listen()
    finally:
        attached = sorted(relay.attached)
        relay.detach_all()
        await link.close()
        await conn.close()
        connections.forget(link.connection_id)
        await relay.record(
            None,
            "acp.disconnected",
            {
                "sessions": attached,
                "close_code": link.close_code,
                "close_reason": link.close_reason,
            },
        )


@bp.get("/acp")
@requires_gate(AGENT_GATE)
@document_response(JsonRpcMessage, 200)
@document_media_type("text/event-stream")
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
async def acp_http_stream() -> Response:
    """The SSE stream of an ACP connection (``Acp-Connection-Id``), or of one of its
    sessions (with ``Acp-Session-Id``): the gateway's JSON-RPC messages, one per
    ``data:`` event. One reader per stream (409 ``stream_in_use``)."""
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    gateway = context(app)
    link = _connection(app)
    session_id = _session_header(link)
    if link.busy(session_id):
        raise GatewayError(409, "stream_in_use", "this stream is already being read")
    every = gateway.settings.events.heartbeat_seconds
    return live_response(
        link.events(session_id, every, lambda: gateway.hub.draining), "text/event-stream"
    )


@bp.delete("/acp")
@requires_gate(AGENT_GATE)
@document_response(AcpAccepted, 202)
@document_response(ErrorResponse, 400)
@document_response(ErrorResponse, 404)
async def acp_http_end() -> Any:
    """End an ACP connection (``Acp-Connection-Id``): its streams close; its sessions stay
    open, resumable by another connection until their agent's idle TTL."""
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    link = _connection(app)
    await _connections(app).end(link.connection_id)
    return {"accepted": True}, 202
