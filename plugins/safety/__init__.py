"""Built-in safety plugin: the policy and rules of ``/gateway/safety/*`` (stored, shared
by replicas), the floor set in ``gateway.toml``, and the rule scanner it registers
through ``gateway_register_safety_scanners``.

- ``rules.py``: a rule, the default set, RE2 compilation; ``policy.py``: the policy and
  its floor; ``config.py``: ``[plugins.safety]``; ``engine.py``: a scan's decision and
  redaction; ``state.py`` and ``tables.py``: what is in force, in the store;
  ``scanner.py``: the registered scanner; ``routes.py`` and ``models.py``: the API;
  ``metrics.py``: decisions by stage and reason code.
"""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import Event, Register, Settings, context, hookimpl, provide, withdraw
from plugins.safety import routes, tables
from plugins.safety.config import configured, parse
from plugins.safety.contract import SafetyAPI
from plugins.safety.metrics import SafetyMetrics
from plugins.safety.scanner import NAME, RuleScanner
from plugins.safety.service import SafetyService
from plugins.safety.state import SafetyState

METRICS_KEY = "safety.metrics"


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE_READ, "read the safety policy and rules; test a scan")
    register(routes.GATE_WRITE, "change the safety policy and rules (above the floor)")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_register_safety_scanners(register: Register) -> None:
    register(NAME, RuleScanner())  # one per app; attached to its state at start-up


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    config = configured(ctx.settings)  # an invalid section fails start-up, naming the key
    state = SafetyState(ctx.store, config)
    await state.load()
    ctx.extras[routes.STATE_KEY] = state
    ctx.extras[METRICS_KEY] = SafetyMetrics(ctx.metrics.registry)
    scanner = ctx.registry("safety_scanners")[NAME]
    if isinstance(scanner, RuleScanner):
        scanner.state = state
    provide(SafetyAPI, SafetyService(ctx), app=app)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    withdraw(SafetyAPI, app=app)
    scanner = context(app).registry("safety_scanners")[NAME]
    if isinstance(scanner, RuleScanner):
        scanner.state = None


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return parse(settings.plugin_section("safety"))[1]


@hookimpl
async def gateway_on_event(event: Event) -> None:
    if event.stream != routes.SAFETY_STREAM or event.type not in _DECISIONS:
        return
    try:
        metrics: SafetyMetrics | None = context().extras.get(METRICS_KEY)
    except RuntimeError:  # published outside any app context: nothing to count on
        return
    if metrics is not None:
        metrics.count(event.type.removeprefix("safety."), dict(event.data or {}))


_DECISIONS = {"safety.warn", "safety.redact", "safety.block"}


@hookimpl
async def gateway_status(app: Quart) -> dict[str, Any]:
    state: SafetyState | None = context(app).extras.get(routes.STATE_KEY)
    if state is None:
        return {}
    snap = state.snapshot
    return {
        "rules": sum(1 for r in snap.rules if r.enabled),
        "mode": snap.policy.mode,
        "secret_mode": snap.policy.secret_detection.mode,
    }
