"""Keep-alive comments for slow streams.

Once a streamed response has started, each time nothing arrived for ``keepalive_seconds``
(``[plugins.openai_compat]``, default 15) an SSE comment ``: keep-alive`` goes out, so
that proxies with an idle timeout keep a slow stream (a long pipeline step) open; SSE
clients, the openai SDK included, ignore comments.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

from plugins.openai_compat.plugin_settings import PluginSetting, is_number

KEEPALIVE = b": keep-alive\n\n"
SETTING = PluginSetting(
    "keepalive_seconds",
    15.0,
    lambda v: is_number(v) and v > 0,
    "a number of seconds > 0",
    float,
)

T = TypeVar("T")


_END = object()


async def with_keepalive(stream: AsyncIterator[T], every: float) -> AsyncGenerator[T | None, None]:
    """The items of ``stream``, and None each time none came for ``every`` seconds (time
    for a keep-alive).

    One task reads ``stream`` for the whole of it, at most one item ahead of the
    consumer, and is never interrupted by the ticks: a read in progress goes on. (A task
    and ``asyncio.wait`` per item cost ~30 µs of CPU per chunk here; this, ~13.) Closing
    this generator, or cancelling its consumer, cancels the reader, which leaves
    ``stream`` closed or idle, so the caller can close it."""
    loop = asyncio.get_running_loop()
    ahead: deque[Any] = deque()  # what the reader has read: items, _END or an exception
    waiter: list[asyncio.Future[None]] = []  # the consumer waiting for the reader
    resume: list[asyncio.Future[None]] = []  # the reader waiting for the consumer

    def hand_over(item: Any) -> None:
        ahead.append(item)
        if waiter and not waiter[0].done():
            waiter[0].set_result(None)

    async def read() -> None:
        try:
            while True:
                item = await anext(stream)
                go = loop.create_future()
                resume[:] = [go]
                hand_over(item)
                await go
        except StopAsyncIteration:
            hand_over(_END)
        except BaseException as exc:  # the consumer raises it (cancelled: it is gone)
            hand_over(exc)
            if not isinstance(exc, Exception):
                raise

    def tick(fut: asyncio.Future[None]) -> None:
        if not fut.done():
            fut.set_result(None)

    reader = loop.create_task(read())
    try:
        while True:
            if not ahead:
                fut = loop.create_future()
                waiter[:] = [fut]
                timer = loop.call_later(every, tick, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    waiter.clear()
                if not ahead:
                    yield None
                    continue
            item = ahead.popleft()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if resume and not resume[0].done():
                resume[0].set_result(None)  # read the next one while this one goes out
            yield item
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait({reader})
