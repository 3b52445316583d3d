"""The test ACP agent (``tests/acp_agent.py``) served over WebSocket: a small server the
tests run in their own event loop, one JSON-RPC message per text frame, the agent's
``Acp-Connection-Id`` on the upgrade response. It can stop and start again on the same
port (the agent keeps each session's history in its workspace, so a session is loaded
back after a restart), and it remembers the handshake headers it was sent."""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import websockets
from acp import AgentSideConnection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from tests.acp_agent import TestAgent


class _Frames:
    """An ``acp`` Transport over the server side of a WebSocket."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(message))
        except websockets.ConnectionClosed:
            raise ConnectionError("closed") from None

    async def receive(self) -> dict[str, Any] | None:
        while True:
            try:
                frame = await self.ws.recv()
            except websockets.ConnectionClosed:
                return None
            if isinstance(frame, str):
                message = json.loads(frame)
                if isinstance(message, dict):
                    return message

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


class AgentServer:
    """``ws://127.0.0.1:<port>/acp`` serving a fresh test agent per connection."""

    def __init__(self, port: int = 0, require: dict[str, str] | None = None) -> None:
        self.port = port
        self.require = require or {}
        self.handshakes: list[dict[str, str]] = []
        self.connections = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/acp"

    async def start(self) -> AgentServer:
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            self.port,
            process_request=self._check,
            process_response=self._stamp,
        )
        self.port = self._server.sockets[0].getsockname()[1] if not self.port else self.port
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(dict(request.headers.raw_items()))
        for name, value in self.require.items():
            if request.headers.get(name) != value:
                return connection.respond(401, "unauthorized\n")
        return None

    def _stamp(self, connection: ServerConnection, request: Request, response: Response) -> None:
        response.headers["Acp-Connection-Id"] = "agent-" + uuid.uuid4().hex[:8]

    async def _serve(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn = AgentSideConnection(TestAgent(), _Frames(ws), listening=False)
        try:
            await conn.listen()
        finally:
            await conn.close()

    async def __aenter__(self) -> AgentServer:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
