"""The hook the dashboard declares for other plugins. Widget authors import their types
from ``plugins.dashboard.contract``."""

from __future__ import annotations

from host.api import Register, registry_hookspec


@registry_hookspec("dashboard_widgets", "dashboard widget")
def gateway_register_dashboard_widgets(register: Register) -> None:
    """Register widgets shown by ``GET /dashboard/widgets`` and on ``/dashboard``:
    ``register(name, widget)``.

    :param register: ``register(name: str, widget: contract.Widget)``; a widget has a
        ``title`` and ``async data(principal) -> dict | None`` (JSON-able; None hides it
        from that principal).

    All implementations are called at start-up; a name registered twice fails start-up.
    Each ``GET /dashboard/widgets`` calls every widget's ``data``; one that raises is
    shown with an ``error`` and the others still answer.
    """
