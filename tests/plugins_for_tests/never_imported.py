"""A built-in-style plugin that tests only ever load disabled: it must stay unimported."""

from __future__ import annotations

from typing import Any

from host.api import hookimpl


@hookimpl
def gateway_status(app: Any) -> dict[str, str]:
    return {"loaded": "yes"}
