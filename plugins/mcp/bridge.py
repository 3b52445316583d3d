"""The SDK's streamable HTTP transport is an ASGI app; ``/mcp`` is a Quart view behind the
host's guard (Host/Origin check, authentication, rate limit, the ``allow_mcp`` gate).
This module runs the ASGI app for one request from inside the view: the request's scope
(with the caller added), its body (read by the host, within its size and time limits),
and the ASGI messages the app sends turned into a Quart response, streamed when the
app streams (SSE), with a client disconnect passed back as ``http.disconnect``."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any

from quart import Response
from werkzeug.datastructures import Headers

log = logging.getLogger(__name__)
ASGIApp = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]
_DONE: dict[str, Any] = {"type": "gateway.done"}
DRAIN_CHECK_SECONDS = 0.5


class _Exchange:
    def __init__(self, body: bytes) -> None:
        self.body: bytes | None = body
        self.disconnected = asyncio.Event()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        await self.sent.put(message)


async def run_asgi(
    app: ASGIApp,
    scope: dict[str, Any],
    body: bytes,
    *,
    stream: Callable[[AsyncIterator[bytes], str], Response],
    draining: Callable[[], bool],
    app_context: Callable[[], AbstractAsyncContextManager[Any]],
) -> Response:
    """``app``'s answer to the request ``scope`` + ``body``. A streamed answer (no end
    in its first body message) is built with ``stream(body, content_type)``; it ends
    when the app ends it, when the client goes away, or when ``draining()`` turns true
    (shutdown: an open SSE stream must not hold the graceful stop)."""
    exchange = _Exchange(body)

    async def serve() -> None:
        async with app_context():
            await app(scope, exchange.receive, exchange.send)

    # A context of its own, with the app's context only: the sessions the app starts
    # outlive this request and must not see its request context (a finished request's
    # principal), while the tools they call find the app (``host.api.context()``).
    task = asyncio.create_task(serve(), context=contextvars.Context())
    task.add_done_callback(lambda _t: exchange.sent.put_nowait(_DONE))
    start = await exchange.sent.get()
    if start["type"] != "http.response.start":
        exchange.disconnected.set()
        await _finish(task)
        raise RuntimeError("the MCP transport ended without an answer")
    headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]])
    first: dict[str, Any]
    if headers.get("content-type", "").startswith("text/event-stream"):
        # An SSE answer streams from its start: the SDK's GET stream sends no byte before
        # its first event or keep-alive ping (15 s), and the client waits for the headers.
        first = {"type": "http.response.body", "body": b"", "more_body": True}
    else:
        first = await exchange.sent.get()
    if first["type"] != "http.response.body" or not first.get("more_body"):
        content = first.get("body", b"") if first["type"] == "http.response.body" else b""
        exchange.disconnected.set()
        await _finish(task)
        return Response(content, status=start["status"], headers=headers)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if first.get("body"):
                yield first["body"]
            while True:
                try:
                    message = await asyncio.wait_for(exchange.sent.get(), DRAIN_CHECK_SECONDS)
                except TimeoutError:
                    if draining():
                        return
                    continue
                if message["type"] != "http.response.body":
                    return
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
        finally:
            exchange.disconnected.set()
            await _finish(task)

    response = stream(chunks(), headers.get("content-type", ""))
    response.status_code = start["status"]
    for name, value in headers.items():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


async def _finish(task: asyncio.Task[None]) -> None:
    """Let the app end on its own after the disconnect; cancel it if it does not."""
    try:
        await asyncio.wait_for(asyncio.shield(task), 5)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    except Exception:
        log.exception("the MCP transport failed")
