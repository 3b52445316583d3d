"""The hooks the ``widgets`` test plugin declares for other plugins."""

from __future__ import annotations

from typing import Any

from host.api import Register, hookspec, registry_hookspec


@registry_hookspec("widgets", "widget")
def gateway_register_widgets(register: Register) -> None:
    """Register widgets: ``register(name, description)``."""


@hookspec
def gateway_widget_clicked(name: str) -> Any:
    """A widget was clicked; awaitable; return what the plugin says about it."""
