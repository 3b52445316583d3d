"""``/mcp``: the gateway as an MCP server (streamable HTTP). The view is behind the host's
guard like every route (Host and Origin checked against DNS rebinding, bearer token or
session, rate limit, the ``allow_mcp`` gate); it hands the request, with its caller, to
the SDK's session manager (``server.py``) through ``bridge.py``. Its body is the SDK's
to read (``raw_body``): a malformed one is a JSON-RPC error, as MCP clients expect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, current_app, request
from quart_schema import document_response

from host.api import (
    GatewayError,
    StreamSlot,
    context,
    current_principal,
    document_media_type,
    live_response,
    raw_body,
    requires_gate,
    stream_slot,
)
from plugins.mcp import server_config
from plugins.mcp.bridge import run_asgi

if TYPE_CHECKING:
    from plugins.mcp.server import GatewayMcpServer

bp = Blueprint("mcp", __name__)
GATE_MCP = "allow_mcp"
SERVER_KEY = "mcp.server"
STARTING_KEY = "mcp.server.starting"
STOPPED_KEY = "mcp.server.stopped"


class JsonRpcMessage(BaseModel):
    """A JSON-RPC 2.0 message of MCP (a request, a notification, a response or an error);
    an SSE answer carries one per ``data:`` line."""

    model_config = ConfigDict(extra="allow")

    jsonrpc: str = "2.0"
    id: int | str | None = Field(None, description="absent on a notification")
    method: str | None = None
    params: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = Field(None, description="{code, message, data}")


class _Streamer:
    """Builds the streamed answer (an SSE stream of the SDK); remembers whether it did."""

    def __init__(self, slot: StreamSlot | None) -> None:
        self.slot = slot
        self.used = False

    def __call__(self, body: AsyncIterator[bytes], content_type: str) -> Response:
        self.used = True
        if self.slot is not None:
            return live_response(body, content_type, self.slot)
        response = Response(body, content_type=content_type)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response


@bp.route("/mcp", methods=["GET", "POST", "DELETE"])
@requires_gate(GATE_MCP)
@raw_body
@document_response(JsonRpcMessage, 200)
@document_media_type("text/event-stream")
@document_response(JsonRpcMessage, 404)
async def mcp_endpoint() -> Response:
    """The gateway's MCP endpoint (streamable HTTP transport): ``POST`` JSON-RPC messages
    (answered as JSON or an SSE stream), ``GET`` the session's server stream (SSE),
    ``DELETE`` ends the session named by ``Mcp-Session-Id``."""
    ctx = context()
    server = await _server()
    from plugins.mcp.server import scope_for

    req = request._get_current_object()  # type: ignore[attr-defined]
    body = await req.get_data(cache=False) if req.method == "POST" else b""
    scope = {**req.scope, **scope_for(current_principal())}
    # The standalone GET stream lives as long as the client keeps it: one of the caller's
    # stream slots, as every event stream of the gateway, taken before the session sees
    # the request (429 ``too_many_streams`` past the cap).
    slot = stream_slot() if req.method == "GET" else None
    streamer = _Streamer(slot)
    try:
        response = await run_asgi(
            server.manager.handle_request,
            scope,
            body,
            stream=streamer,
            draining=lambda: ctx.lifecycle.draining,
            app_context=current_app._get_current_object().app_context,  # type: ignore[attr-defined]
        )
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    if slot is not None and not streamer.used:
        slot.release()  # answered without a stream (400, 404, 405)
    return response


async def _server() -> GatewayMcpServer:
    """The app's MCP server, started by the first request that needs it (the SDK is
    imported then, not at every gateway's start)."""
    ctx = context()
    server: GatewayMcpServer | None = ctx.extras.get(SERVER_KEY)
    if server is None:
        if ctx.extras.get(STOPPED_KEY) or ctx.lifecycle.draining:
            raise GatewayError(503, "mcp_not_ready", "the gateway is shutting down")
        starting: asyncio.Lock = ctx.extras.setdefault(STARTING_KEY, asyncio.Lock())
        async with starting:
            server = ctx.extras.get(SERVER_KEY)
            if server is None:
                from plugins.mcp.server import GatewayMcpServer

                server = GatewayMcpServer(ctx, server_config.server_settings(ctx))
                server.start(current_app._get_current_object().app_context)  # type: ignore[attr-defined]
                ctx.extras[SERVER_KEY] = server
    try:
        await asyncio.wait_for(server.ready.wait(), 30)
    except TimeoutError:
        raise GatewayError(503, "mcp_not_ready", "the MCP server has not started") from None
    return server
