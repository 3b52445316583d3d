"""Gateway state: running, paused (stored, shared by every worker), draining (shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from host.errors import GatewayError
from host.metrics import GatewayMetrics
from host.storage import Store, now_ms
from host.stream_slots import StreamSlots

PAUSED_KEY = "gateway.paused"


class Lifecycle:
    def __init__(
        self,
        store: Store,
        max_websockets_per_principal: int = 16,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.store = store
        self.started_ms = now_ms()
        self._started = time.monotonic()
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.open_websockets = 0
        self._no_websockets = asyncio.Event()
        self._no_websockets.set()
        self.websocket_slots = StreamSlots(
            max_websockets_per_principal,
            "WebSockets",
            "server.max_websockets_per_principal",
            "too_many_websockets",
            on_refused=metrics.rate_limited.labels("websockets").inc if metrics else None,
        )

    @property
    def uptime_seconds(self) -> float:
        return round(time.monotonic() - self._started, 3)

    async def paused(self) -> bool:
        """Read from the store, so a pause by another worker is seen at once."""
        state = await self.store.get_value(PAUSED_KEY)
        return bool(state and state.get("paused"))

    async def state(self) -> str:
        if self.draining:
            return "draining"
        return "paused" if await self.paused() else "running"

    async def pause(self, by: str) -> dict[str, object]:
        return await self._transition(True, by)

    async def resume(self, by: str) -> dict[str, object]:
        return await self._transition(False, by)

    async def _transition(self, pause: bool, by: str) -> dict[str, object]:
        current = await self.store.get_value(PAUSED_KEY)
        if bool(current and current.get("paused")) == pause:
            raise GatewayError(
                409,
                "invalid_transition",
                "the gateway is already paused" if pause else "the gateway is not paused",
            )
        new = {"paused": pause, "by": by, "at_ms": now_ms()}
        if not await self.store.compare_and_set(PAUSED_KEY, current, new):
            raise GatewayError(409, "invalid_transition", "the gateway state changed meanwhile")
        return new

    async def require_running(self) -> None:
        """For plugins: refuse new work while paused (503 ``gateway_paused``)."""
        if self.draining:
            raise GatewayError(503, "draining", "the gateway is shutting down")
        if await self.paused():
            raise GatewayError(503, "gateway_paused", "the gateway is paused; resume it first")

    # -- in-flight accounting, for a graceful drain ----------------------------------------

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self.in_flight == 0

    def websocket_opened(self) -> None:
        self.open_websockets += 1
        self._no_websockets.clear()

    def websocket_closed(self) -> None:
        self.open_websockets = max(0, self.open_websockets - 1)
        if self.open_websockets == 0:
            self._no_websockets.set()

    async def wait_websockets_closed(self, timeout: float) -> bool:
        """WebSocket loops notice ``draining`` within a second and say goodbye."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_websockets.wait(), timeout)
        return self.open_websockets == 0
