"""The example plugin's hooks, and nothing else: routes live in ``routes.py``, the table
and its migration in ``tables.py``, queries in ``book.py``.

Each ``@hookimpl`` function is named exactly after a hook in ``host.hookspecs`` (a
misspelt name fails start-up) and takes any subset of that hook's arguments.
"""

from __future__ import annotations

from typing import Any

from quart import Quart

from gateway_hello import book, routes, tables
from host.api import context, hookimpl


@hookimpl
def gateway_register_blueprints(register: Any) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Any) -> None:
    register(routes.GATE, "sign the hello plugin's guest book")


@hookimpl
def gateway_register_migrations(register: Any) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    # An awaitable hook: the host awaits it. The section appears under "hello" in
    # GET /gateway/status -> plugin_status.
    return {"greetings": await book.count(context(app).store)}
