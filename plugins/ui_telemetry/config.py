"""``[plugins.ui_telemetry]``: batch and event size, the rate per principal, and how
long events are kept. Every number has a floor and a ceiling; each problem names its key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Settings

PREFIX = "plugins.ui_telemetry"


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_batch_events: int = Field(100, ge=1, le=1000)
    max_metadata_bytes: int = Field(4096, ge=64, le=65536)
    events_per_minute: int = Field(600, ge=1, le=100_000)
    max_age_days: float = Field(30.0, ge=0, le=3650)  # 0 keeps events forever


def parse(settings: Settings) -> tuple[TelemetryConfig, list[str]]:
    try:
        return TelemetryConfig.model_validate(settings.plugin_section("ui_telemetry")), []
    except ValidationError as exc:
        found = [
            f"{PREFIX}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
        return TelemetryConfig(), found


def problems(settings: Settings) -> list[str]:
    return parse(settings)[1]


def configured(settings: Settings) -> TelemetryConfig:
    config, found = parse(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
