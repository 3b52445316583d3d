"""A plugin that declares hooks of its own (``widget_hookspecs.py``): a registry of widgets
other plugins fill, and a hook it calls when a widget is clicked over HTTP."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from host.api import Register, context, hookimpl
from tests.plugins_for_tests import widget_hookspecs

bp = Blueprint("widgets", __name__)


@bp.get("/widgets")
async def widgets() -> dict[str, Any]:
    registry = context().registry("widgets")
    return {"widgets": {name: registry.owners[name] for name in registry}}


@bp.post("/widgets/<name>/click")
async def click(name: str) -> dict[str, Any]:
    answers = await context().plugins.call_async("gateway_widget_clicked", name=name)
    return {"answers": dict(answers)}


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(widget_hookspecs)


@hookimpl
def gateway_register_blueprints(register: Register) -> None:
    register(bp)
