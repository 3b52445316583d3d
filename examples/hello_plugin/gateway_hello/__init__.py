"""The example plugin's hooks, and nothing else: routes live in ``routes.py``, the table
and its migration in ``tables.py``, queries in ``book.py``.

Each ``@hookimpl`` function is named exactly after a hook the host declares
(``docs/reference/plugins.md`` lists them; a misspelt name fails start-up) and takes any
subset of that hook's arguments, typed as the hook declares them. Everything of the
gateway comes from ``host.api``.
"""

from __future__ import annotations

from quart import Quart

from gateway_hello import book, routes, tables
from host.api import Register, Settings, context, hookimpl


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    # ``settings`` could shape the routes; the greeting word is read per request instead.
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE, "sign the hello plugin's guest book")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
async def gateway_status(app: Quart) -> dict[str, int]:
    # An awaitable hook: the host awaits it. The section appears under "hello" in
    # GET /gateway/status -> plugin_status.
    return {"greetings": await book.count(context(app).store)}
