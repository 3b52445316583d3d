"""Remote agents (``[agents.<id>] url``): the gateway as an ACP client of an agent served
over WebSocket, beside the stdio agents it starts (``runtime.py``).

The ``agent-client-protocol`` package gives the protocol (``connect_to_agent``, the
same ``GatewayClient`` callbacks as a stdio agent: session updates, permission
requests, files and terminals confined to the session's workspace); this module adds
only the framing adapter of the RFD's WebSocket transport
(agentclientprotocol/agent-client-protocol#721, revised in #1124): one JSON-RPC message
per text frame, the agent's ``Acp-Connection-Id`` from the upgrade response kept, the
affinity cookies it sets returned on the next handshake, the configured ``headers``
(secret references) sent with every handshake.

Connecting backs off: the first attempt at once, then after 0.1 s, doubling up to
``reconnect_max_seconds``, until ``start_timeout_seconds`` have passed; a refusal the
agent's server answers with an HTTP status (401, 403, 404...) is not retried. A
connection that drops ends the runtime like an exited process (the session reads
``attached: false``, its stream gets ``session.agent_exited`` with the reason); the
session's next prompt or ``resume`` connects again and loads the session
(``session/load``) when the agent offers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, cast

import websockets
from acp import Client, connect_to_agent
from acp.ws.client import MemoryAcpCookieStore
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from plugins.agents.config import AgentConfig
from plugins.agents.runtime import AgentRuntime, AgentStartError, GatewayClient, Sink

log = logging.getLogger("gateway.agents.remote")

CONNECTION_ID_HEADER = "Acp-Connection-Id"
MAX_FRAME_BYTES = 16 * 1024 * 1024
FIRST_PAUSE = 0.1


class RemoteUnreachable(Exception):
    """No connection to the remote agent within the start timeout."""


class WebSocketClientTransport:
    """An ``acp`` Transport: JSON-RPC messages as the text frames of a client WebSocket.
    ``ended`` is set once the socket is closed, by either side; ``reason`` says why."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.closed = False
        self.ended = asyncio.Event()
        self.reason = ""
        response = ws.response
        self.connection_id = response.headers.get(CONNECTION_ID_HEADER) if response else None

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed or self.ended.is_set():
            raise ConnectionError(self.reason or "the connection to the agent is closed")
        try:
            await self.ws.send(json.dumps(message, separators=(",", ":")))
        except websockets.ConnectionClosed as exc:
            self._lost(exc)
            raise ConnectionError(self.reason) from None

    async def receive(self) -> dict[str, Any] | None:
        while True:
            try:
                frame = await self.ws.recv()
            except websockets.ConnectionClosed as exc:
                self._lost(exc)
                return None
            if isinstance(frame, bytes):
                continue  # binary frames carry nothing of ACP
            try:
                message = json.loads(frame)
            except json.JSONDecodeError:
                log.warning("remote agent sent a frame that is not JSON: %.200s", frame)
                continue
            if isinstance(message, dict):
                return message

    def _lost(self, exc: websockets.ConnectionClosed) -> None:
        if not self.reason:
            close = exc.rcvd
            if close is None:
                self.reason = "the connection to the agent was lost"
            else:
                said = f": {close.reason}" if close.reason else ""
                self.reason = f"the agent closed the connection ({close.code}{said})"
        self.ended.set()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = self.reason or "closed by the gateway"
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.ended.set()


class Attempts:
    """What the connection attempts met (for the error when none succeeds in time)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def why(self, url: str, budget: float) -> str:
        tries = "1 attempt" if self.count == 1 else f"{self.count} attempts"
        return f"{url} is unreachable: {self.last} ({tries} in {budget:g} s)"


async def connect(
    url: str,
    headers: dict[str, str],
    cookies: MemoryAcpCookieStore,
    budget: float,
    longest_pause: float,
    attempts: Attempts,
) -> WebSocketClientTransport:
    """A connection to ``url``, retried with back-off for ``budget`` seconds."""
    deadline = time.monotonic() + budget
    pause = FIRST_PAUSE
    while True:
        attempts.count += 1
        sent = dict(headers)
        if cookie := cookies.cookie_header():
            sent["Cookie"] = cookie
        try:
            left = max(deadline - time.monotonic(), 0.05)
            ws = await asyncio.wait_for(
                ws_connect(url, additional_headers=sent, max_size=MAX_FRAME_BYTES), left
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            raise RemoteUnreachable(f"{url} refused the connection with HTTP {status}") from None
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            attempts.last = str(exc) or type(exc).__name__
            if time.monotonic() + pause >= deadline:
                raise RemoteUnreachable(attempts.why(url, budget)) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, longest_pause)
            continue
        if ws.response is not None:
            cookies.store_set_cookies(list(ws.response.headers.get_all("Set-Cookie")))
        return WebSocketClientTransport(ws)


class RemoteAgentRuntime(AgentRuntime):
    """The ACP connection of one session to a remote agent (no process of ours)."""

    def __init__(self, agent_id: str, config: AgentConfig, workspace: Path, sink: Sink) -> None:
        super().__init__(agent_id, config, workspace, sink)
        self.cookies = MemoryAcpCookieStore()
        self.transport: WebSocketClientTransport | None = None
        self.attempts = Attempts()

    @property
    def url(self) -> str:
        return self.config.url or ""

    async def _connect(self, stack: AsyncExitStack) -> Any:
        headers = {name: secret.get() for name, secret in self.config.headers.items()}
        transport = await connect(
            self.url,
            headers,
            self.cookies,
            self.config.start_timeout_seconds,
            self.config.reconnect_max_seconds,
            self.attempts,
        )
        self.transport = transport
        self.attempts = Attempts()
        conn = connect_to_agent(cast(Client, GatewayClient(self)), transport)
        stack.push_async_callback(conn.close)
        return conn

    def where(self) -> dict[str, Any]:
        connection = self.transport.connection_id if self.transport is not None else None
        return {"url": self.url, "connection_id": connection}

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, RemoteUnreachable):
            return str(exc)
        if isinstance(exc, TimeoutError) and self.transport is None and self.attempts.last:
            return self.attempts.why(self.url, self.config.start_timeout_seconds)
        if isinstance(exc, TimeoutError):
            return (
                f"{self.url} did not open its session within "
                f"{self.config.start_timeout_seconds:g} s"
            )
        if self.transport is not None and self.transport.ended.is_set():
            return f"{self.url}: {self.transport.reason}"
        return f"{self.url}: {super()._why(exc)}"

    async def _watch(self) -> None:
        assert self.transport is not None
        await self.transport.ended.wait()
        if not self.stopping:
            self.sink.exited(None, f"{self.url}: {self.transport.reason}")

    @property
    def alive(self) -> bool:
        transport = self.transport
        return transport is not None and not transport.ended.is_set() and not self.stopping

    @property
    def lost(self) -> str | None:
        """Why the connection ended, once it did."""
        transport = self.transport
        if transport is None or not transport.ended.is_set():
            return None
        return f"the connection to remote agent {self.agent_id!r} was lost: {transport.reason}"


def make_runtime(agent_id: str, config: AgentConfig, workspace: Path, sink: Sink) -> AgentRuntime:
    """The runtime of ``config``: over WebSocket for a ``url``, else a process on stdio."""
    kind = RemoteAgentRuntime if config.remote else AgentRuntime
    return kind(agent_id, config, workspace, sink)


__all__ = ["AgentStartError", "RemoteAgentRuntime", "WebSocketClientTransport", "make_runtime"]
