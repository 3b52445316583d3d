"""What other plugins (the audit summary, the dashboard) read of the UI telemetry: the
:class:`UiTelemetry` service (``host.api.service(UiTelemetry)``)."""

from __future__ import annotations

from typing import Any

from host.api import Store
from plugins.ui_telemetry import store


class UiTelemetry:
    def __init__(self, backing: Store) -> None:
        self.store = backing

    async def counts(self, since_ms: int) -> list[dict[str, Any]]:
        """``[{"view", "action", "events"}]`` received since ``since_ms``, most first."""
        return await store.counts(self.store, since_ms)


__all__ = ["UiTelemetry"]
