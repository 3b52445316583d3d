"""Built-in audit plugin: a tamper-evident (hash-chained) log of mutating requests, auth
failures, safety and approval decisions, config changes and what plugins report; its
routes under ``/gateway/audit``, ``gateway audit verify|export``, and the ``AuditLog``
service. Hooks only; see ``capture.py`` (what is recorded), ``chain.py`` (the chain),
``routes.py``, ``retention.py``."""

from __future__ import annotations

import logging
from typing import Any

import click
from quart import Quart

from host.api import Event, Register, Settings, Store, context, hookimpl, provide, withdraw
from plugins.audit import routes, tables
from plugins.audit.capture import event_record
from plugins.audit.config import configured, problems
from plugins.audit.contract import AuditLog
from plugins.audit.metrics import AuditMetrics
from plugins.audit.retention import prune
from plugins.audit.writer import AuditService, AuditWriter

log = logging.getLogger("gateway.audit")
METRICS_KEY = "audit.metrics"


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(
        routes.GATE_READ,
        "read, summarise, export and verify the audit log (every principal's records)",
    )


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    # One set of metrics per app, kept across a restart of the same app (a registry
    # refuses a metric registered twice).
    metrics: AuditMetrics | None = ctx.extras.get(METRICS_KEY)
    if metrics is None:
        metrics = ctx.extras[METRICS_KEY] = AuditMetrics(ctx.metrics.registry)
    writer = AuditWriter(ctx.store, metrics)
    ctx.extras[routes.STATE_KEY] = routes.AuditState(writer, configured(ctx.settings))
    provide(AuditLog, AuditService(writer), app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    ctx = context(app)
    withdraw(AuditLog, app=app)
    audit: routes.AuditState | None = ctx.extras.pop(routes.STATE_KEY, None)
    if audit is not None:
        await audit.writer.close()


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> dict[str, Any]:
    audit: routes.AuditState | None = context(app).extras.get(routes.STATE_KEY)
    if audit is not None:
        audit.config = configured(settings)
    return {"exclude_routes": sorted(audit.config.exclude_routes) if audit else []}


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_on_event(event: Event, app: Quart) -> None:
    record = event_record(event)
    if record is None:
        return
    audit: routes.AuditState | None = context(app).extras.get(routes.STATE_KEY)
    if audit is None:
        log.warning("audit record of %s#%s lost: not started", event.stream, event.seq)
        return
    await audit.writer.write(record)


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    return await prune(store, settings, now_ms, dry_run)


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    audit: routes.AuditState | None = context(app).extras.get(routes.STATE_KEY)
    if audit is None:
        return {}
    return {"written": audit.writer.written, "write_failures": audit.writer.failures}


@hookimpl
def gateway_register_commands(cli: click.Group) -> None:
    from plugins.audit import cli as commands

    commands.register(cli)
