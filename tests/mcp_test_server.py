"""A real MCP server for the MCP tests, written with the official SDK:
``python -m tests.mcp_test_server stdio`` or ``python -m tests.mcp_test_server http PORT
KEY`` (streamable HTTP on loopback at ``/mcp``, refusing requests without ``X-Api-Key:
KEY``)."""

from __future__ import annotations

import sys
from typing import Any

from mcp.server.mcpserver import Context, MCPServer


def build() -> MCPServer:
    server: MCPServer = MCPServer("gateway-test-tools")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    @server.tool()
    def fail() -> str:
        """Always fails."""
        raise ValueError("it failed on purpose")

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool called ``name`` and announce the change."""

        def doubled(x: int) -> int:
            return 2 * x

        server.add_tool(doubled, name=name, description="Double a number.")
        await ctx.session.send_tool_list_changed()
        return "grown"

    return server


def keyed(app: Any, key: str) -> Any:
    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and headers.get(b"x-api-key") != key.encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no key"})
            return
        await app(scope, receive, send)

    return guarded


def main() -> None:
    server = build()
    if sys.argv[1] == "stdio":
        server.run("stdio")
        return
    import uvicorn

    port, key = int(sys.argv[2]), sys.argv[3]
    app = keyed(server.streamable_http_app(), key)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
