"""Iterating a stream with ticks: the items of an async iterator, and a marker each time
none came for a while, without interrupting the read in progress. Event streams use the
ticks to re-check a connection's credential; the OpenAI surfaces to send keep-alives."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


async def with_ticks(
    stream: AsyncIterator[T], every: Callable[[], float], marker: Any = None
) -> AsyncGenerator[Any, None]:
    """The items of ``stream``, and ``marker`` each time none came for ``every()`` seconds
    (asked anew at each wait).

    One task reads ``stream`` for the whole of it, at most one item ahead of the
    consumer, and is never interrupted by the ticks: a read in progress goes on. (A task
    and ``asyncio.wait`` per item cost ~30 µs of CPU per item here; this, ~13.) Closing
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
                timer = loop.call_later(every(), tick, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    waiter.clear()
                if not ahead:
                    yield marker
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
