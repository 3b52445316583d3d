"""What another plugin imports from the dashboard plugin: nothing else of it is public.

- Widgets (``gateway_register_dashboard_widgets``): an object with a ``title`` and
  ``async data(principal) -> dict | None`` (see :class:`Widget`).
"""

from __future__ import annotations

from typing import Any, Protocol

from host.api import Principal


class Widget(Protocol):
    title: str

    async def data(self, principal: Principal) -> dict[str, Any] | None:
        """What the widget shows to ``principal`` (JSON-able), or None to hide it from
        them. Filter by the principal's ownership and gates as the plugin's routes do."""
        ...


__all__ = ["Widget"]
