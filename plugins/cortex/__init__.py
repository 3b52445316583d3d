"""Built-in cortex plugin: an operator copilot that answers over SSE from the gateway's
real state through read-only tools run as the caller. Hooks only; routes in
``routes.py``, the chat loop in ``chat.py``, the tools in ``tools.py``."""

from __future__ import annotations

import asyncio
from typing import Any

from quart import Quart

from host.api import Register, Settings, context, hookimpl, provide
from plugins.cortex import routes, tables, tools
from plugins.cortex.config import configured, problems
from plugins.cortex.contract import CortexAPI
from plugins.cortex.gates import GATE_CHAT


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(GATE_CHAT, "ask the cortex operator copilot (POST /cortex/chat; it calls a model)")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_register_tools(register: Register) -> None:
    for name, tool in tools.registered().items():
        register(name, tool)


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    context(app).extras[routes.CONFIG_KEY] = configured(context(app).settings)
    provide(CortexAPI, routes.CortexService(), app=app)


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> dict[str, Any]:
    context(app).extras[routes.CONFIG_KEY] = configured(settings)
    return {"model": context(app).extras[routes.CONFIG_KEY].model}


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    pending: set[asyncio.Task[None]] = context(app).extras.get("cortex.writes", set())
    if pending:
        await asyncio.wait(pending, timeout=5)
