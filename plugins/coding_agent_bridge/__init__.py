"""Built-in coding-agent bridge plugin (seed 004): sessions that coding agents running
elsewhere report progress to over HTTP and drain follow-up instructions from, or that an
ACP agent the gateway runs serves (``agent_link.py``). Hooks only; routes in
``routes.py``, the store work in ``api.py``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from quart import Quart

from host.api import Register, Settings, context, hookimpl
from plugins.coding_agent_bridge import routes, tables
from plugins.coding_agent_bridge.agent_link import DISPATCHER_KEY, Dispatcher
from plugins.coding_agent_bridge.api import CONFIG_KEY
from plugins.coding_agent_bridge.config import configured, problems
from plugins.coding_agent_bridge.gates import GATE_ACT_ALL, GATE_READ_ALL, GATE_WRITE
from plugins.coding_agent_bridge.job_source import BridgeSessionJobs


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(
        GATE_WRITE,
        "open bridge sessions, append progress, queue and drain follow-ups, close and reap",
    )
    register(GATE_READ_ALL, "read every principal's bridge sessions and their streams")
    register(GATE_ACT_ALL, "act on (progress, follow-ups, drain, close, reap) every bridge session")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


# The jobs plugin's hook: optional, so a gateway with that plugin off still starts.
@hookimpl(optionalhook=True)
def gateway_register_job_sources(register: Register) -> None:
    register("bridge", BridgeSessionJobs())


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    ctx.extras[CONFIG_KEY] = configured(ctx.settings)  # invalid: start-up fails naming the key
    dispatcher = Dispatcher(app)
    ctx.extras[DISPATCHER_KEY] = dispatcher
    await dispatcher.resume()


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> None:
    context(app).extras[CONFIG_KEY] = configured(settings)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    dispatcher: Dispatcher | None = context(app).extras.pop(DISPATCHER_KEY, None)
    if dispatcher is not None:
        await dispatcher.stop()


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    ctx = context(app)
    query = sa.select(sa.func.count()).select_from(tables.sessions)
    async with ctx.store.read() as conn:
        open_ = (await conn.execute(query.where(tables.sessions.c.state == "open"))).scalar_one()
    return {"open_sessions": int(open_)}
