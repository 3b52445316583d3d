"""``[plugins.tools]``: which tools are switched off, how often call statistics are
written, the limits of the built-in ``http_fetch`` tool; and the top-level
``[tools.approval]``: which calls wait for a person's approval (``approval_policy.py``).
``parse`` gives both the values and the problems (each naming its key) for
``gateway_validate_config``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from host.api import GatewayContext, GatewayError, Settings
from plugins.tools import approval_policy
from plugins.tools.approval_policy import ApprovalPolicy

PREFIX = "plugins.tools"
# Floor and ceiling of every number (docs/reference/configuration.md).
BOUNDS: dict[str, tuple[float, float]] = {
    "flush_seconds": (0.05, 3600),
    "http_fetch.max_bytes": (1, 50 * 1024 * 1024),
    "http_fetch.timeout_seconds": (0.1, 120),
}


@dataclass(frozen=True)
class FetchConfig:
    allowed_hosts: tuple[str, ...] = ()  # none: every fetch is refused
    max_bytes: int = 1024 * 1024
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class ToolsConfig:
    disabled: tuple[str, ...] = ()
    flush_seconds: float = 5.0
    http_fetch: FetchConfig = field(default_factory=FetchConfig)
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)


def _number(
    table: dict[str, Any], key: str, default: float, found: list[str], prefix: str = ""
) -> float:
    value = table.get(key, default)
    low, high = BOUNDS[prefix + key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        found.append(f"{PREFIX}.{prefix}{key}: must be a number from {low:g} to {high:g}")
        return default
    return value


def _names(table: dict[str, Any], key: str, found: list[str], prefix: str = "") -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        found.append(f"{PREFIX}.{prefix}{key}: must be a list of non-empty strings")
        return ()
    return tuple(value)


def parse(section: dict[str, Any]) -> tuple[ToolsConfig, list[str]]:
    found: list[str] = []
    defaults = ToolsConfig()
    fetch = section.get("http_fetch", {})
    if not isinstance(fetch, dict):
        found.append(f"{PREFIX}.http_fetch: must be a table")
        fetch = {}
    unknown = set(section) - {"disabled", "flush_seconds", "http_fetch"}
    unknown |= {
        f"http_fetch.{k}" for k in set(fetch) - {"allowed_hosts", "max_bytes", "timeout_seconds"}
    }
    found += [f"{PREFIX}.{name}: unknown setting" for name in sorted(unknown)]
    hosts = tuple(h.lower() for h in _names(fetch, "allowed_hosts", found, "http_fetch."))
    fetch_config = FetchConfig(
        hosts,
        int(_number(fetch, "max_bytes", defaults.http_fetch.max_bytes, found, "http_fetch.")),
        _number(
            fetch, "timeout_seconds", defaults.http_fetch.timeout_seconds, found, "http_fetch."
        ),
    )
    config = ToolsConfig(
        _names(section, "disabled", found),
        _number(section, "flush_seconds", defaults.flush_seconds, found),
        fetch_config,
    )
    return config, found


def parse_approval(section: Any) -> tuple[ApprovalPolicy, list[str]]:
    """The top-level ``[tools]`` table: ``[tools.approval]`` alone (a table outside
    ``[plugins]``, so a reload or a PATCH changes the policy live)."""
    found: list[str] = []
    if section is None:
        return ApprovalPolicy(), found
    if not isinstance(section, dict):
        return ApprovalPolicy(), ["tools: must be a table"]
    found += [f"tools.{key}: unknown setting" for key in sorted(set(section) - {"approval"})]
    return approval_policy.parse(section.get("approval"), found), found


def problems(settings: Settings) -> list[str]:
    return (
        parse(settings.plugin_section("tools"))[1]
        + parse_approval(settings.extra_section("tools"))[1]
    )


def configured(settings: Settings) -> ToolsConfig:
    """The section's values; 400 ``config_invalid`` naming every invalid key."""
    config, found = parse(settings.plugin_section("tools"))
    policy, more = parse_approval(settings.extra_section("tools"))
    if found or more:
        raise GatewayError(400, "config_invalid", "; ".join(found + more))
    return replace(config, approval=policy)


CACHE_KEY = "tools.config"


def config_of(gateway: GatewayContext) -> ToolsConfig:
    """:func:`configured` for the gateway's settings now, parsed once per settings object:
    every tool call asks (a reload brings new settings, so a new parse)."""
    cached: tuple[Settings, ToolsConfig] | None = gateway.extras.get(CACHE_KEY)
    if cached is not None and cached[0] is gateway.settings:
        return cached[1]
    config = configured(gateway.settings)
    gateway.extras[CACHE_KEY] = (gateway.settings, config)
    return config
