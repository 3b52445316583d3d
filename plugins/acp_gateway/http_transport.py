"""ACP over streamable HTTP (the RFD's HTTP transport, agentclientprotocol/agent-client-
protocol#721, revised in #1124): one editor's connection, as an ``acp`` Transport.

- ``POST /acp`` with ``initialize`` opens a connection: the response is the JSON-RPC
  answer, with ``Acp-Connection-Id``. Every later message is a ``POST`` with that header
  (and ``Acp-Session-Id`` for the session's methods), answered 202: its response comes
  on a stream.
- ``GET /acp`` with ``Acp-Connection-Id`` is the connection's SSE stream, with
  ``Acp-Session-Id`` too a session's: one JSON-RPC message per ``data:`` event. A
  message for a session goes on the session's stream once the session is established
  (the response of ``session/new``, ``session/load`` or ``session/resume``, which come
  on the connection's stream and name the session, so the editor opens its stream);
  the rest on the connection's. A stream buffers until it is read.
- ``DELETE /acp`` ends the connection (its sessions stay resumable, as for a dropped
  WebSocket).

Connections live in the memory of the gateway process that opened them (several
replicas need affinity, e.g. by ``Acp-Connection-Id``); an unused one ends after
``[plugins.acp_gateway] http_idle_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

ASK_PERMISSION = "session/request_permission"
CANCEL_REQUEST = "$/cancel_request"
ESTABLISHING = frozenset({"session/new", "session/load", "session/resume"})
KEEPALIVE = b": keepalive\n\n"
TICK = 1.0  # how often an idle stream looks whether the gateway drains


class _Stream:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.reading = False


class HttpConnection:
    """An ``acp`` Transport between the relay (the agent side) and an HTTP editor."""

    def __init__(self, connection_id: str, owner: str) -> None:
        self.connection_id = connection_id
        self.owner = owner
        self.closed = False
        self.close_code = 1000
        self.close_reason = ""
        self.last_used = time.monotonic()
        self.asked: dict[tuple[str, str], Any] = {}
        self.ending = asyncio.Event()
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._main = _Stream()
        self._sessions: dict[str, _Stream] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._requests: dict[str, tuple[str, str | None]] = {}  # id -> (method, session)
        self._close_after_error = False

    # -- the agent side (the relay's AgentSideConnection) ---------------------------------

    async def receive(self) -> dict[str, Any] | None:
        if self.closed:
            return None
        return await self._inbox.get()

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise ConnectionError("the editor's connection is closed")
        if message.get("method") == ASK_PERMISSION:
            params = message.get("params") or {}
            call = (params.get("toolCall") or {}).get("toolCallId")
            self.asked[(str(params.get("sessionId")), str(call))] = message.get("id")
        if "method" not in message:
            self._respond(message)
        else:
            session = (message.get("params") or {}).get("sessionId")
            self._stream(session).queue.put_nowait(message)

    def _respond(self, message: dict[str, Any]) -> None:
        key = str(message.get("id"))
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(message)
            return
        method, session = self._requests.pop(key, ("", None))
        if method in ESTABLISHING and isinstance(message.get("result"), dict):
            result = message["result"]
            session = session or result.get("sessionId")
            if isinstance(session, str):
                # The editor learns the session from the response and opens its stream.
                message = {**message, "result": {**result, "sessionId": session}}
                self._sessions.setdefault(session, _Stream())
            self._main.queue.put_nowait(message)
        else:
            self._stream(session).queue.put_nowait(message)
        if self._close_after_error and "error" in message:
            self.end(self.close_code, self.close_reason)

    def _stream(self, session: Any) -> _Stream:
        found = self._sessions.get(session) if isinstance(session, str) else None
        return found if found is not None else self._main

    # -- the editor side (the routes) -----------------------------------------------------

    def knows(self, session_id: str) -> bool:
        return session_id in self._sessions

    async def deliver(self, message: dict[str, Any]) -> None:
        self.last_used = time.monotonic()
        if "id" in message and "method" in message:
            session = (message.get("params") or {}).get("sessionId")
            self._requests[str(message["id"])] = (
                str(message["method"]),
                session if isinstance(session, str) else None,
            )
        self._inbox.put_nowait(message)

    async def call(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Deliver a request and await its response (``initialize``, answered in the POST)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[str(message.get("id"))] = future
        await self.deliver(message)
        return await asyncio.wait_for(future, timeout)

    def reading(self) -> bool:
        return any(s.reading for s in (self._main, *self._sessions.values()))

    def busy(self, stream: str | None) -> bool:
        found = self._sessions.get(stream) if stream is not None else self._main
        return found is not None and found.reading

    async def events(
        self, session_id: str | None, keepalive: float, draining: Callable[[], bool]
    ) -> AsyncIterator[bytes]:
        """The SSE stream of the connection (or of one of its sessions); it ends with the
        connection, or when the gateway drains."""
        stream = self._sessions.get(session_id) if session_id is not None else self._main
        if stream is None:
            return
        stream.reading = True
        quiet_since = time.monotonic()
        try:
            while not self.closed and not draining():
                self.last_used = time.monotonic()
                try:
                    message = await asyncio.wait_for(stream.queue.get(), TICK)
                except TimeoutError:
                    if time.monotonic() - quiet_since >= keepalive:
                        quiet_since = time.monotonic()
                        yield KEEPALIVE
                    continue
                quiet_since = time.monotonic()
                if message is None:
                    return
                yield f"data: {json.dumps(message, separators=(',', ':'))}\n\n".encode()
        finally:
            stream.reading = False
            self.last_used = time.monotonic()

    # -- ending ---------------------------------------------------------------------------

    async def withdraw(self, session_id: str, tool_call_id: str) -> None:
        request_id = self.asked.pop((session_id, tool_call_id), None)
        if request_id is not None and not self.closed:
            params = {"sessionId": session_id, "requestId": request_id}
            self._stream(session_id).queue.put_nowait(
                {"jsonrpc": "2.0", "method": CANCEL_REQUEST, "params": params}
            )

    def end(self, code: int, reason: str) -> None:
        if not self.ending.is_set():
            self.close_code, self.close_reason = code, reason[:120]
        self.ending.set()
        self._inbox.put_nowait(None)  # the relay's connection stops listening

    def end_after_error(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason[:120]
        self._close_after_error = True

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.ending.set()
        for stream in (self._main, *self._sessions.values()):
            stream.queue.put_nowait(None)
        self._inbox.put_nowait(None)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.cancel()
        with contextlib.suppress(Exception):
            self._waiters.clear()


class HttpConnections:
    """The HTTP connections of this gateway process."""

    def __init__(self) -> None:
        self._links: dict[str, HttpConnection] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, link: HttpConnection, task: asyncio.Task[None]) -> None:
        self._links[link.connection_id] = link
        self._tasks[link.connection_id] = task

    def get(self, connection_id: str, owner: str) -> HttpConnection | None:
        link = self._links.get(connection_id)
        return link if link is not None and link.owner == owner and not link.closed else None

    def forget(self, connection_id: str) -> None:
        self._links.pop(connection_id, None)
        self._tasks.pop(connection_id, None)

    async def end(self, connection_id: str) -> None:
        link = self._links.get(connection_id)
        task = self._tasks.get(connection_id)
        if link is not None:
            link.end(1000, "ended by the editor")
            await link.close()
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 10)
        self.forget(connection_id)

    def sweep(self, idle_seconds: float) -> None:
        """End the connections unused for ``idle_seconds`` (none of their streams read)."""
        now = time.monotonic()
        for link in list(self._links.values()):
            if not link.reading() and now - link.last_used > idle_seconds:
                link.end(1001, "idle")
                self._links.pop(link.connection_id, None)

    async def close(self) -> None:
        for connection_id in list(self._links):
            await self.end(connection_id)
