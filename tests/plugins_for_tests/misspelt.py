"""A plugin with a typo in a hook name (``blueprint`` for ``blueprints``)."""

from __future__ import annotations

from typing import Any

from host.api import hookimpl


@hookimpl
def gateway_register_blueprint(register: Any) -> None:
    raise AssertionError("a misspelt hook is never called")
