"""The framing adapter: an ``acp`` :class:`~acp.Transport` over the Quart WebSocket of
an ``/acp`` connection. One JSON-RPC message per text frame (the RFD's WebSocket
transport, agentclientprotocol/agent-client-protocol#721, revised in #1124); binary
frames are ignored, as the package's own WebSocket client does.

The package ships a WebSocket client and an ASGI server of its own, but the server owns
the whole ASGI app; this adapter lets the host's route, auth and credential watch stay in
front. While the socket is open the credential it was opened with is checked again on
every frame and every second (a revoked one closes the socket with 4401), and a draining
gateway or an ending relay closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from host.api import InvalidJSON, parse_json

CLOSE_UNAUTHORIZED = 4401
CLOSE_GOING_AWAY = 1001
CLOSE_AGENT_GONE = 1011
PARSE_ERROR = -32700
ASK_PERMISSION = "session/request_permission"
# JSON-RPC request cancellation as ACP adopted it (LSP's ``$/cancelRequest``, spelled
# ``$/cancel_request``): an editor that does not know it ignores it.
CANCEL_REQUEST = "$/cancel_request"


class WebSocketTransport:
    """JSON-RPC messages as text frames of ``ws`` (Quart's ``websocket``)."""

    def __init__(
        self,
        ws: Any,
        max_frame_bytes: int,
        still_valid: Callable[[], Any] | None = None,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ws = ws
        self.max_frame_bytes = max_frame_bytes
        self.still_valid = still_valid
        self.draining = draining
        self.closed = False
        self.close_code = 1000
        self.close_reason = ""
        self.ending = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._close_after_error = False
        self._pending: asyncio.Task[Any] | None = None
        # (session id, tool call id) -> the id of the permission request sent for it
        self.asked: dict[tuple[str, str], Any] = {}

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise ConnectionError("the editor's connection is closed")
        text = json.dumps(message, separators=(",", ":"))
        if message.get("method") == ASK_PERMISSION:
            params = message.get("params") or {}
            call = (params.get("toolCall") or {}).get("toolCallId")
            self.asked[(str(params.get("sessionId")), str(call))] = message.get("id")
        async with self._send_lock:
            await self.ws.send(text)
        if self._close_after_error and "error" in message and "id" in message:
            self.ending.set()

    async def receive(self) -> dict[str, Any] | None:
        while not self.closed:
            if self.ending.is_set() or self.draining():
                return None
            raw = await self._next_frame()
            if self.still_valid is not None and not await self.still_valid():
                self.end(CLOSE_UNAUTHORIZED, "unauthorized")
                return None
            if raw is None or isinstance(raw, bytes):
                continue
            message = await self._parse(raw)
            if message is not None:
                return message
        return None

    async def _next_frame(self) -> str | bytes | None:
        """The next frame, or None after a second without one or once the relay ends."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.ws.receive())
        ender = asyncio.ensure_future(self.ending.wait())
        try:
            done, _ = await asyncio.wait(
                {self._pending, ender}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            ender.cancel()
        if self._pending not in done:
            return None
        task, self._pending = self._pending, None
        frame: str | bytes = task.result()
        return frame

    async def _parse(self, raw: str) -> dict[str, Any] | None:
        """A frame's message; a malformed one is answered with a JSON-RPC parse error."""
        if len(raw.encode()) > self.max_frame_bytes:
            problem = f"a frame is limited to {self.max_frame_bytes} bytes"
        else:
            try:
                data = parse_json(raw)
            except InvalidJSON as exc:
                problem = f"the frame is not valid JSON: {exc}"
            else:
                if isinstance(data, dict):
                    return data
                problem = "a frame holds one JSON-RPC message (an object)"
        error = {"code": PARSE_ERROR, "message": problem}
        await self.send({"jsonrpc": "2.0", "id": None, "error": error})
        return None

    async def withdraw(self, session_id: str, tool_call_id: str) -> None:
        """Tell the editor a permission request it was sent is no longer asked."""
        request_id = self.asked.pop((session_id, tool_call_id), None)
        if request_id is not None and not self.closed:
            params = {"requestId": request_id}
            await self.send({"jsonrpc": "2.0", "method": CANCEL_REQUEST, "params": params})

    def end(self, code: int, reason: str) -> None:
        """End the connection with ``code`` once the current receive returns."""
        if not self.ending.is_set():
            self.close_code, self.close_reason = code, reason[:120]
        self.ending.set()

    def end_after_error(self, code: int, reason: str) -> None:
        """End the connection after the next error response (the failed prompt's), so the
        editor reads why before the socket closes."""
        self.close_code, self.close_reason = code, reason[:120]
        self._close_after_error = True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._pending is not None:
            self._pending.cancel()
        with contextlib.suppress(Exception):
            async with self._send_lock:
                await self.ws.close(self.close_code, self.close_reason)
