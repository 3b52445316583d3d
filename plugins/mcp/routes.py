"""``/mcp``: the gateway as an MCP server. Not built yet: the route is registered behind
the host's authentication and its gate, and answers 501 ``not_implemented``."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import validate_response

from host.api import ErrorResponse, GatewayError, requires_gate

bp = Blueprint("mcp", __name__)
GATE_MCP = "allow_mcp"


@bp.route("/mcp", methods=["GET", "POST", "DELETE"])
@requires_gate(GATE_MCP)
@validate_response(ErrorResponse, 501)
async def mcp_endpoint() -> Response:
    """The gateway's MCP endpoint (streamable HTTP). Not supported yet: 501."""
    raise GatewayError(
        501,
        "not_implemented",
        "the gateway as an MCP server (/mcp) is not supported yet; the gateway is an MCP"
        " client only ([mcp.servers.<name>])",
    )
