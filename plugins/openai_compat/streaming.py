"""Server-sent events for the OpenAI surfaces: forward chunks as they arrive.

The first chunk is awaited before the response starts, so an upstream that refuses or
times out yields a proper HTTP error; after that, a failure becomes an error event and
the stream ends. A client that goes away cancels the generator, which closes the
upstream request. A slow stream gets keep-alive comments (``keepalive.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from quart import Response

from host.api import StreamSlot, error_body, live_response
from plugins.openai_compat import keepalive
from plugins.openai_compat.keepalive import with_keepalive
from plugins.openai_compat.providers.base import ProviderError

DONE = b"data: [DONE]\n\n"


def sse_data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def first_of(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None


def provider_error_body(exc: ProviderError) -> dict[str, Any]:
    extra = {"upstream_status": exc.upstream_status} if exc.upstream_status else {}
    return error_body(exc.status, exc.code, exc.message, exc.type, **extra)


def sse_response(
    first: dict[str, Any] | None,
    stream: AsyncIterator[dict[str, Any]],
    transform: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]],
    on_end: Callable[[str], None],
    before_done: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
    slot: StreamSlot | None = None,
) -> Response:
    """``transform`` maps each upstream chunk to what the client gets (None: drop it);
    ``before_done()`` runs when the upstream finished well and returns chunks to send
    last, before ``[DONE]``; ``on_end("ok" | "error" | "cancelled")`` runs once when the
    stream stops."""

    every = keepalive.SETTING.current()

    async def body() -> AsyncIterator[bytes]:
        outcome = "cancelled"
        try:
            try:
                if first is not None:
                    out = await transform(first)
                    if out is not None:
                        yield sse_data(out)
                async with contextlib.aclosing(with_keepalive(stream, every)) as chunks:
                    async for chunk in chunks:
                        if chunk is None:
                            yield keepalive.KEEPALIVE
                            continue
                        out = await transform(chunk)
                        if out is not None:
                            yield sse_data(out)
            except ProviderError as exc:
                outcome = "error"
                yield sse_data(provider_error_body(exc))
                return
            for out in await before_done() if before_done is not None else []:
                yield sse_data(out)
            outcome = "ok"
            yield DONE
        finally:
            await close_stream(stream)
            on_end(outcome)

    return event_stream(body(), slot)


def event_stream(body: AsyncIterator[bytes], slot: StreamSlot | None = None) -> Response:
    """A ``text/event-stream`` answer of ``body``, for every OpenAI surface: not cached,
    not buffered by a reverse proxy (nginx reads ``X-Accel-Buffering``), no timeout.
    It holds ``slot`` (taken with ``stream_slot()`` before the upstream was called)."""
    return live_response(body, "text/event-stream", slot)


async def close_stream(stream: AsyncIterator[dict[str, Any]]) -> None:
    """Close an upstream chunk iterator (and with it the upstream request)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: S110 - closing a broken upstream; nothing to add
            pass
