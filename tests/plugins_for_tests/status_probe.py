"""A plugin module loaded as a built-in or through an entry point: one status section."""

from __future__ import annotations

from typing import Any

from host.api import hookimpl


@hookimpl
def gateway_status(app: Any) -> dict[str, str]:
    return {"probe": "loaded"}
