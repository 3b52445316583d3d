"""Built-in pipelines plugin: pipeline definitions, durable runs, approvals, debug
breakpoints. Hooks only; routes in ``routes/``, the API they call in ``api.py``, the
engine in ``engine.py``."""

from __future__ import annotations

from typing import Any

import click
import sqlalchemy as sa
from quart import Quart

from host.api import Register, Settings, Store, context, hookimpl, provide, withdraw
from plugins.pipelines import hookspecs, retention, routes, tables
from plugins.pipelines.api import PipelinesAPI
from plugins.pipelines.approval_queue import ApprovalQueue
from plugins.pipelines.catalog import PipelineCatalog, pipelines_directory
from plugins.pipelines.config import configured, problems
from plugins.pipelines.engine import ENGINE_KEY, Engine
from plugins.pipelines.kinds import BUILTIN_KINDS
from plugins.pipelines.schedules import suspended


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)  # step kinds and pipelines: plugins/pipelines/hookspecs.py


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(
        routes.GATE_RUN,
        "start, run, resume, cancel and release (paused) pipeline runs; add and remove "
        "schedules; fire triggers",
    )
    register(
        routes.GATE_APPROVE,
        "approve or deny a run's approval gate, or another plugin's approval (an agent's "
        "permission request); list every approval",
    )
    register(
        routes.GATE_READ_ALL,
        "read every principal's runs, run events, approvals, schedules and breakpoints",
    )
    register(
        routes.GATE_ACT_ALL,
        "resume, approve, deny, cancel and release other principals' runs, fire and remove "
        "their schedules; add and remove breakpoints (they pause every run)",
    )


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_register_step_kinds(register: Register) -> None:
    for name, kind in BUILTIN_KINDS.items():
        register(name, kind)


@hookimpl
def gateway_register_secret_keys(register: Register) -> None:
    register("plugins.pipelines.webhooks.*.secret", "the HMAC key of a webhook trigger")


def _load(
    app: Quart, settings: Settings, directory_setting: str | None, in_use: set[str] | None = None
) -> dict[str, Any]:
    ctx = context(app)
    cat: PipelineCatalog = ctx.extras.setdefault(routes.CATALOG_KEY, PipelineCatalog())
    directory = pipelines_directory(directory_setting, settings.config_file)
    registered = dict(ctx.registry("pipelines").items)
    return cat.load(directory, registered, in_use)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    config = configured(ctx.settings)  # an invalid section fails start-up, naming the key
    _load(app, ctx.settings, config.directory)
    engine = Engine(app, ctx.extras[routes.CATALOG_KEY], config)
    ctx.extras[ENGINE_KEY] = engine
    await engine.start()
    provide(PipelinesAPI, PipelinesAPI(app), app=app)
    provide(ApprovalQueue, ApprovalQueue(app), app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    withdraw(PipelinesAPI, app=app)
    withdraw(ApprovalQueue, app=app)
    engine: Engine | None = context(app).extras.pop(ENGINE_KEY, None)
    if engine is not None:
        await engine.stop()
    catalog: PipelineCatalog | None = context(app).extras.get(routes.CATALOG_KEY)
    if catalog is not None:
        catalog.close()


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> dict[str, Any]:
    # Reported under "pipelines" in the reload response: a broken file with its error
    # (its last good definitions stay); runs in flight keep the definition they started with,
    # and the catalog lets go of the others (and of their modules).
    # The worker's settings (max_concurrent_runs, lease_seconds, poll_seconds) need a restart.
    engine: Engine | None = context(app).extras.get(ENGINE_KEY)
    in_use = await engine.definitions_in_use() if engine is not None else None
    return _load(app, settings, configured(settings).directory, in_use)


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    ctx = context(app)
    engine: Engine | None = ctx.extras.get(ENGINE_KEY)
    cat: PipelineCatalog | None = ctx.extras.get(routes.CATALOG_KEY)
    return {
        "pipelines": len(cat.current) if cat else 0,
        "load_errors": cat.errors if cat else {},
        "worker": engine.worker_id if engine else None,
        "active_runs": len(engine.tasks) if engine else 0,
        "max_concurrent_runs": engine.max_concurrent if engine else None,
        "suspended_schedules": await _suspended_schedules(app),
    }


async def _suspended_schedules(app: Quart) -> list[str]:
    """Ids of the schedules that no longer fire because their owner was removed."""
    ctx = context(app)
    owned = sa.select(tables.schedules.c.id, tables.schedules.c.owner).where(
        tables.schedules.c.owner.is_not(None)
    )
    async with ctx.store.read() as conn:
        rows = (await conn.execute(owned.order_by(tables.schedules.c.id))).all()
    return [row.id for row in rows if suspended(ctx, row)]


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    return await retention.prune(store, settings, now_ms, dry_run)


@hookimpl
def gateway_register_commands(cli: click.Group) -> None:
    from plugins.pipelines import cli as commands

    commands.register(cli)
