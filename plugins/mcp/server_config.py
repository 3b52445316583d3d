"""``[mcp.server]``: the gateway as an MCP server (``/mcp``). ``parse`` gives the values
and the problems (each naming its key) for ``gateway_validate_config``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from host.api import GatewayContext, Settings

PREFIX = "mcp.server"
# Floor and ceiling of every number (docs/reference/configuration.md).
BOUNDS: dict[str, tuple[float, float]] = {
    "session_idle_seconds": (1, 7 * 86_400),
    "max_sessions": (1, 1_000_000),
    "pipeline_timeout_seconds": (1, 7 * 86_400),
}


@dataclass(frozen=True)
class ServerSettings:
    session_idle_seconds: float = 1800.0
    max_sessions: int = 10_000
    pipeline_timeout_seconds: float = 3600.0
    pipelines: bool = True


def parse(section: Any) -> tuple[ServerSettings, list[str]]:
    defaults = ServerSettings()
    if section is None:
        return defaults, []
    if not isinstance(section, dict):
        return defaults, [f"{PREFIX}: must be a table"]
    found = [
        f"{PREFIX}.{k}: unknown setting" for k in sorted(set(section) - {*BOUNDS, "pipelines"})
    ]
    numbers: dict[str, float] = {}
    for key, (low, high) in BOUNDS.items():
        default = getattr(defaults, key)
        value = section.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            found.append(f"{PREFIX}.{key}: must be a number from {low:g} to {high:g}")
            value = default
        numbers[key] = value
    if key == "max_sessions" and not float(numbers["max_sessions"]).is_integer():
        found.append(f"{PREFIX}.max_sessions: must be a whole number")
    pipelines = section.get("pipelines", True)
    if not isinstance(pipelines, bool):
        found.append(f"{PREFIX}.pipelines: must be true or false")
        pipelines = True
    settings = ServerSettings(
        float(numbers["session_idle_seconds"]),
        int(numbers["max_sessions"]),
        float(numbers["pipeline_timeout_seconds"]),
        pipelines,
    )
    return settings, found


def section_of(settings: Settings) -> Any:
    mcp = settings.extra_section("mcp")
    return mcp.get("server") if isinstance(mcp, dict) else None


def problems(settings: Settings) -> list[str]:
    return parse(section_of(settings))[1]


CACHE_KEY = "mcp.server.config"


def server_settings(gateway: GatewayContext) -> ServerSettings:
    """The section's values for the settings now, parsed once per settings object."""
    cached: tuple[Settings, ServerSettings] | None = gateway.extras.get(CACHE_KEY)
    if cached is not None and cached[0] is gateway.settings:
        return cached[1]
    found = parse(section_of(gateway.settings))[0]
    gateway.extras[CACHE_KEY] = (gateway.settings, found)
    return found
