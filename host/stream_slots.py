"""Long-lived connections per principal (event streams, WebSockets), with a cap.

A stream or socket takes a slot of its principal when it opens and gives it back when it
ends; past the cap a new one is refused with 429 before anything is sent. The count is
per worker process: with ``server.workers = N`` a principal may hold up to N times the cap.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from quart.wrappers.response import IterableBody

from host.errors import GatewayError


class StreamSlot:
    """One open connection of one principal. :meth:`release` is idempotent; a slot that
    is never released (its response was never sent) is released when collected."""

    __slots__ = ("__weakref__", "_release", "key")

    def __init__(self, owner: StreamSlots | None, key: str) -> None:
        self.key = key
        self._release = weakref.finalize(self, owner._release, key) if owner else None

    def release(self) -> None:
        if self._release is not None:
            self._release()  # runs once; later calls do nothing


class StreamSlots:
    def __init__(
        self,
        limit: int,
        what: str,
        setting: str,
        code: str,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        self.limit = limit
        self.what = what  # "event streams", "WebSockets": for the refusal message
        self.setting = setting
        self.code = code
        self.on_refused = on_refused
        self._open: dict[str, int] = {}

    def open(self, key: str) -> int:
        return self._open.get(key, 0)

    def acquire(self, key: str) -> StreamSlot:
        """A slot for ``key``, or 429 when it already holds ``limit`` of them."""
        count = self._open.get(key, 0)
        if count >= self.limit:
            if self.on_refused is not None:
                self.on_refused()
            raise GatewayError(
                429,
                self.code,
                f"this principal already has {count} open {self.what}, the most allowed "
                f"({self.setting} = {self.limit}); close one and retry",
            )
        self._open[key] = count + 1
        return StreamSlot(self, key)

    def _release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)


class SlotBody(IterableBody):
    """A streamed response body that holds a slot until the response is done with it:
    Quart leaves the body's context when the body ends, fails or the client goes away."""

    def __init__(self, iterable: Any, slot: StreamSlot) -> None:
        super().__init__(iterable)
        self.slot = slot

    async def __aexit__(self, exc_type: type, exc_value: BaseException, tb: TracebackType) -> None:
        try:
            await super().__aexit__(exc_type, exc_value, tb)
        finally:
            self.slot.release()
