"""``[plugins.audit]``: one parse gives both the problems (``gateway_validate_config``:
``gateway config check``, a config PATCH, a reload) and the values the plugin runs with.
Every problem names its key: ``plugins.audit.retention_max_count: ...``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from host.api import GatewayError, Settings

PREFIX = "plugins.audit"
MAX_AGE_DAYS = 36_500
MAX_COUNT = 1_000_000_000
KEYS = frozenset({"retention_max_age_days", "retention_max_count", "exclude_routes"})


# Model calls: each success is counted per principal, model and day in the model usage
# (``GET /gateway/usage``) and the per-principal metrics, and recording them here too
# was a store write per call (about a third of a proxied call's CPU, bench/README.md).
# Their refusals and failures are still recorded; ``exclude_routes = []`` records all.
MODEL_CALL_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
# /mcp: each tool call is its own audit record (mcp.tool_call, refusals included), which
# says more than the request's; the request record cost a chained write per call.
DEFAULT_EXCLUDED = MODEL_CALL_ROUTES | {"/mcp"}


@dataclass(frozen=True)
class AuditConfig:
    # Records older than this go at a prune (0: kept however old).
    retention_max_age_days: float = 365.0
    # At most this many newest records are kept (0: no limit).
    retention_max_count: int = 0
    # Route templates whose *successful* requests are not recorded (a busy model route);
    # refusals and failures on them still are.
    exclude_routes: frozenset[str] = DEFAULT_EXCLUDED


def parse(section: dict[str, Any]) -> tuple[AuditConfig, list[str]]:
    found: list[str] = []
    defaults = AuditConfig()
    age = _number(section, "retention_max_age_days", defaults.retention_max_age_days, found)
    count = _number(section, "retention_max_count", defaults.retention_max_count, found)
    if count != int(count):
        found.append(f"{PREFIX}.retention_max_count: must be a whole number (got {count!r})")
        count = defaults.retention_max_count
    routes = section.get("exclude_routes", sorted(defaults.exclude_routes))
    if not isinstance(routes, list) or not all(
        isinstance(r, str) and r.startswith("/") for r in routes
    ):
        found.append(
            f"{PREFIX}.exclude_routes: must be a list of route templates such as "
            f"'/v1/chat/completions' (got {routes!r})"
        )
        routes = []
    for key in sorted(set(section) - KEYS):
        found.append(f"{PREFIX}.{key}: unknown key")
    return AuditConfig(float(age), int(count), frozenset(routes)), found


def _number(section: dict[str, Any], key: str, default: float, found: list[str]) -> float:
    value = section.get(key, default)
    high = MAX_AGE_DAYS if key.endswith("days") else MAX_COUNT
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        found.append(f"{PREFIX}.{key}: must be a number from 0 to {high} (got {value!r})")
        return default
    return value


def problems(settings: Settings) -> list[str]:
    return parse(settings.plugin_section("audit"))[1]


def configured(settings: Settings) -> AuditConfig:
    """The section's values; 400 ``config_invalid`` naming every invalid key."""
    config, found = parse(settings.plugin_section("audit"))
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
