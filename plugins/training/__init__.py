"""Built-in training plugin: rollouts recorded from finished pipeline runs and from
conversations of the OpenAI-compatible API, feedback on them, and exports as JSONL
fine-tuning datasets handed to trainer plugins (``gateway_training_batch``). Hooks only;
routes in ``routes.py``, recording in ``collector.py``, exports in ``exports.py``."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import Event, Register, Settings, Store, context, hookimpl, provide
from plugins.training import hookspecs, rollouts, routes, tables
from plugins.training.collector import COLLECTOR_KEY, TERMINAL_EVENTS, Collector, collector_of
from plugins.training.config import configured, problems
from plugins.training.contract import TrainingAPI
from plugins.training.gates import GATES


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)  # gateway_training_batch: plugins/training/hookspecs.py


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    for name, description in GATES.items():
        register(name, description)


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    collector = Collector(app, configured(context(app).settings))
    context(app).extras[COLLECTOR_KEY] = collector
    collector.start()
    provide(TrainingAPI, routes.TrainingService(), app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    collector: Collector | None = context(app).extras.pop(COLLECTOR_KEY, None)
    if collector is not None:
        await collector.stop()


@hookimpl
async def gateway_reload(app: Quart, settings: Settings) -> dict[str, Any]:
    collector = collector_of(app)
    if collector is not None:
        collector.file_config = configured(settings)
        await collector.config(fresh=True)
    return {"reloaded": "[plugins.training] defaults"}


@hookimpl
def gateway_on_event(event: Event, app: Quart) -> None:
    # The run path: a set lookup and a queue put, nothing awaited.
    if event.type in TERMINAL_EVENTS and event.stream.startswith("run:"):
        collector = collector_of(app)
        if collector is not None:
            collector.offer("run", event.stream[4:])


@hookimpl
def gateway_record_conversation(app: Quart, record: dict[str, Any]) -> None:
    collector = collector_of(app)
    if collector is not None:
        collector.offer("conversation", record)


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    collector = collector_of(app)
    if collector is None:
        return {"collecting": False}
    config = await collector.config()
    return {"collecting": config.enabled, "pending": collector.pending, **collector.counters}


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    return await rollouts.prune(store, settings, configured(settings).max_age_days, now_ms, dry_run)
