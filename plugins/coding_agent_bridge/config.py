"""``[plugins.coding_agent_bridge]``: validated at ``gateway config check``, a config
PATCH, a reload and start-up; every problem names its key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Settings, validation_message

SECTION = "coding_agent_bridge"


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_open_sessions: int = Field(
        100, ge=1, le=100_000, description="open bridge sessions over every principal"
    )
    idle_ttl_seconds: float = Field(
        3600.0, ge=1, le=30 * 86400, description="idle time after which reap expires a session"
    )
    max_followups_per_session: int = Field(
        1000, ge=1, le=1_000_000, description="queued follow-ups a session holds at most"
    )


def _section(settings: Settings) -> dict[str, object]:
    section = dict(settings.plugin_section(SECTION))
    section.pop("enabled", None)
    return section


def problems(settings: Settings) -> list[str]:
    try:
        BridgeConfig.model_validate(_section(settings))
    except ValidationError as exc:
        return [validation_message(exc, f"plugins.{SECTION}.")[0]]
    return []


def configured(settings: Settings) -> BridgeConfig:
    found = problems(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return BridgeConfig.model_validate(_section(settings))
