"""``[plugins.pipelines]``: one parse of the section gives both what is wrong with it
(``problems``, for ``gateway_validate_config``: ``gateway config check``, a config PATCH,
a reload) and the values the plugin runs with (``configured``, at start-up and reload).
Every problem names its key: ``plugins.pipelines.lease_seconds: ...``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host.api import GatewayError, Secret, SecretError, Settings

PREFIX = "plugins.pipelines"
WEBHOOK_TOLERANCE_SECONDS = 300.0
# Floor and ceiling of each number in the section (docs/reference/configuration.md): a
# poll of 1e-300 s would spin a core, a lease of a year would never hand a dead
# worker's runs on, and a tolerance of centuries would accept any replayed delivery.
BOUNDS: dict[str, tuple[float, float]] = {
    "max_concurrent_runs": (0, 1000),
    "max_crashed_claims": (1, 100),
    "lease_seconds": (1, 3600),
    "poll_seconds": (0.05, 600),
    "webhooks.*.tolerance_seconds": (1, 86400),
}
TOLERANCE = "webhooks.*.tolerance_seconds"


@dataclass(frozen=True)
class PipelinesConfig:
    # Running runs over every worker process; 0: this process serves the API (starts,
    # approvals, events) but its worker claims no runs.
    max_concurrent_runs: int = 4
    lease_seconds: float = 15.0
    poll_seconds: float = 1.0
    directory: str | None = None  # None: the shipped examples
    # Claims in a row that may end without progress (their process died or stalled past
    # the lease) before the run fails with ``run_crashed_repeatedly``.
    max_crashed_claims: int = 3


def parse(section: dict[str, Any], config_dir: Path | None) -> tuple[PipelinesConfig, list[str]]:
    """The section's values (the default where a value is invalid) and its problems."""
    found: list[str] = []
    defaults = PipelinesConfig()
    runs = _integer(section, "max_concurrent_runs", defaults.max_concurrent_runs, found)
    lease = _seconds(section, "lease_seconds", defaults.lease_seconds, found)
    poll = _seconds(section, "poll_seconds", defaults.poll_seconds, found)
    crashes = _integer(section, "max_crashed_claims", defaults.max_crashed_claims, found)
    directory = section.get("directory") or None
    if directory is not None and not isinstance(directory, str):
        found.append(f"{PREFIX}.directory: must be a path (a string) (got {directory!r})")
        directory = None
    _check_webhooks(section.get("webhooks", {}), config_dir, found)
    return PipelinesConfig(runs, lease, poll, directory, crashes), found


def problems(settings: Settings) -> list[str]:
    return parse(settings.plugin_section("pipelines"), settings.config_dir)[1]


def configured(settings: Settings) -> PipelinesConfig:
    """The section's values; GatewayError 400 ``config_invalid`` naming every invalid key
    (start-up fails with it)."""
    config, found = parse(settings.plugin_section("pipelines"), settings.config_dir)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config


def webhook_tolerance(table: dict[str, Any]) -> float:
    """A webhook's ``tolerance_seconds`` (how far its timestamp may be from now)."""
    return _seconds(
        table,
        "tolerance_seconds",
        WEBHOOK_TOLERANCE_SECONDS,
        [],
        "",
        TOLERANCE,
    )


def _integer(section: dict[str, Any], key: str, default: int, found: list[str]) -> int:
    raw = section.get(key, default)
    low, high = BOUNDS[key]
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        found.append(f"{PREFIX}.{key}: must be an integer from {low:g} to {high:g} (got {raw!r})")
        return default
    return raw


def _seconds(
    section: dict[str, Any],
    key: str,
    default: float,
    found: list[str],
    where: str = PREFIX,
    bound: str | None = None,
) -> float:
    raw = section.get(key, default)
    low, high = BOUNDS[bound or key]
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        found.append(
            f"{where}.{key}: must be a number of seconds from {low:g} to {high:g} (got {raw!r})"
        )
        return default
    return float(raw)


def _check_webhooks(raw: Any, config_dir: Path | None, found: list[str]) -> None:
    """``[plugins.pipelines.webhooks.<name>]`` tables: a ``pipeline`` id, a ``secret``
    that resolves (a string, ``{ env = "NAME" }`` set, ``{ file = "path" }`` readable) and
    an optional ``tolerance_seconds`` (1 to 86400, default 300).
    The routes read the tables themselves (``webhooks.tables``). Whether the pipeline
    exists is not checked: directory pipelines are known only once their files are
    imported, which a check does not do (a delivery for an unknown one is a 404)."""
    if not isinstance(raw, dict):
        found.append(f"{PREFIX}.webhooks: must be a table of webhook tables (got {raw!r})")
        return
    for name, table in raw.items():
        key = f"{PREFIX}.webhooks.{name}"
        if not isinstance(table, dict):
            found.append(f"{key}: must be a table with pipeline and secret (got {table!r})")
            continue
        pipeline = table.get("pipeline")
        if not isinstance(pipeline, str) or not pipeline:
            found.append(f"{key}.pipeline: must be a pipeline id (a string) (got {pipeline!r})")
        try:
            Secret.resolve(table.get("secret"), config_dir)
        except SecretError as exc:
            found.append(f"{key}.secret: {exc}")
        _seconds(
            table,
            "tolerance_seconds",
            WEBHOOK_TOLERANCE_SECONDS,
            found,
            key,
            TOLERANCE,
        )
