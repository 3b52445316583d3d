"""Built-in sessions plugin: conversation sessions (append-only message trees with a
head, branches, reset) and memory (a document and structured entries per session, with
full-text search and a graph). Hooks only; routes in ``routes.py``, the store in
``service.py`` and ``memory.py``, search in ``search.py``; what other plugins import is
``contract.py``. Written against ``host.api`` alone, as a third party would."""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart

from host.api import Register, Settings, context, hookimpl, provide, withdraw
from plugins.sessions import hookspecs, recorder, routes, tables
from plugins.sessions.config import configured, problems
from plugins.sessions.contract import SessionsService
from plugins.sessions.gates import (
    GATE_ACT_ALL,
    GATE_MEMORY_WRITE,
    GATE_READ_ALL,
    GATE_SESSION_WRITE,
)
from plugins.sessions.metrics import SessionsMetrics
from plugins.sessions.service import SessionsStore

log = logging.getLogger("gateway.sessions")
METRICS_KEY = "sessions.metrics"


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)  # memory rankers: plugins/sessions/hookspecs.py


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(GATE_SESSION_WRITE, "append to sessions, reset and branch them")
    register(GATE_MEMORY_WRITE, "write, delete and restore memory entries and documents")
    register(GATE_READ_ALL, "read every principal's sessions and memory")
    register(
        GATE_ACT_ALL,
        "append to, reset and write the memory of other principals' sessions (with ?owner=)",
    )


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


# Hooks of other plugins (pipelines, openai_compat): optional, so a gateway with either
# one disabled starts without a warning about them.
@hookimpl(optionalhook=True)
def gateway_register_step_kinds(register: Register) -> None:
    from plugins.sessions.steps import MemoryKind, SessionKind

    register("session", SessionKind())
    register("memory", MemoryKind())


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    config = configured(ctx.settings)  # an invalid section fails start-up, naming the key
    metrics = ctx.extras.get(METRICS_KEY)
    if metrics is None:  # one registry per app: created once, kept over restarts of the app
        metrics = ctx.extras[METRICS_KEY] = SessionsMetrics(ctx.metrics.registry)
    store = SessionsStore(ctx, config, metrics)
    ctx.extras[routes.STORE_KEY] = store
    provide(SessionsService, store, app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    withdraw(SessionsService, app=app)
    context(app).extras.pop(routes.STORE_KEY, None)


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl(optionalhook=True)
async def gateway_record_conversation(app: Quart, record: dict[str, Any]) -> None:
    store: SessionsStore | None = context(app).extras.get(routes.STORE_KEY)
    if store is None or not store.config.record_conversations:
        return
    await recorder.record(store, record)
