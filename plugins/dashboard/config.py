"""``[plugins.dashboard]``: one parse gives the section's problems (``gateway config
check``, a config PATCH, a reload) and the values the plugin runs with. Every problem
names its key: ``plugins.dashboard.approval_wait_seconds: ...``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from host.api import GatewayError, Settings

SECTION = "dashboard"
PREFIX = f"plugins.{SECTION}"


@dataclass(frozen=True)
class DashboardConfig:
    # An approval pending longer than this raises the ``approval_waiting`` alert.
    approval_wait_seconds: int = 900
    # Runs finished within the window, and the failed share that raises ``failure_rate``
    # (only once at least ``failure_min_runs`` finished: two runs are no rate).
    failure_window_seconds: int = 3600
    failure_rate_threshold: float = 0.5
    failure_min_runs: int = 5
    # Safety blocks and failed model calls within ``signal_window_seconds`` that raise
    # ``safety_blocks`` and ``provider_errors`` (counted by every replica, summed).
    signal_window_seconds: int = 300
    safety_block_threshold: int = 10
    provider_error_threshold: int = 5
    # Change notices the live stream keeps for ``Last-Event-ID`` resume; a client further
    # behind gets a snapshot event instead.
    stream_buffer: int = 1000
    # How long a sign-in with a gateway token lasts (a password sign-in lasts as long as
    # its auth session: ``auth.session_ttl_seconds``).
    login_ttl_seconds: int = 12 * 3600


BOUNDS: dict[str, tuple[float, float]] = {
    "approval_wait_seconds": (1, 30 * 86400),
    "failure_window_seconds": (60, 30 * 86400),
    "failure_rate_threshold": (0, 1),
    "failure_min_runs": (1, 100_000),
    "signal_window_seconds": (10, 86400),
    "safety_block_threshold": (1, 1_000_000),
    "provider_error_threshold": (1, 1_000_000),
    "stream_buffer": (10, 100_000),
    "login_ttl_seconds": (60, 30 * 86400),
}


def parse(section: dict[str, Any]) -> tuple[DashboardConfig, list[str]]:
    """The section's values (the default where a value is invalid) and its problems."""
    found: list[str] = []
    values: dict[str, Any] = {}
    defaults = DashboardConfig()
    for spec in fields(DashboardConfig):
        default = getattr(defaults, spec.name)
        raw = section.get(spec.name, default)
        low, high = BOUNDS[spec.name]
        whole = isinstance(default, int)
        kind = (int,) if whole else (int, float)
        if isinstance(raw, bool) or not isinstance(raw, kind) or not low <= raw <= high:
            what = "an integer" if whole else "a number"
            found.append(
                f"{PREFIX}.{spec.name}: must be {what} from {low:g} to {high:g} (got {raw!r})"
            )
            raw = default
        values[spec.name] = raw if whole else float(raw)
    unknown = sorted(set(section) - {"enabled"} - set(BOUNDS))
    found.extend(f"{PREFIX}.{key}: unknown setting" for key in unknown)
    return DashboardConfig(**values), found


def problems(settings: Settings) -> list[str]:
    return parse(settings.plugin_section(SECTION))[1]


def configured(settings: Settings) -> DashboardConfig:
    """The section's values; GatewayError 400 ``config_invalid`` naming every invalid key."""
    config, found = parse(settings.plugin_section(SECTION))
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
