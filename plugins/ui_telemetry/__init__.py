"""Built-in UI telemetry plugin: ``POST /gateway/ui/telemetry`` stores batched UI events
(bounded in size and rate), kept ``max_age_days`` (``gateway_prune``), read by other
plugins through the ``UiTelemetry`` service (``contract.py``)."""

from __future__ import annotations

from quart import Quart

from host.api import (
    Register,
    Settings,
    Store,
    context,
    hookimpl,
    provide,
    withdraw,
)
from plugins.ui_telemetry import routes
from plugins.ui_telemetry import store as tables
from plugins.ui_telemetry.config import configured, problems
from plugins.ui_telemetry.contract import UiTelemetry


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE, "send UI telemetry events (the web UI's token)")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_validate_config(settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
def gateway_startup(app: Quart) -> None:
    provide(UiTelemetry, UiTelemetry(context(app).store), app=app)


@hookimpl
def gateway_shutdown(app: Quart) -> None:
    withdraw(UiTelemetry, app=app)


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    max_age = configured(settings).max_age_days
    return await tables.prune(store, settings, max_age, now_ms, dry_run)
