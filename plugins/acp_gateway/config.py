"""``[plugins.acp_gateway]``: who reaches which agent at ``/acp``, and its frame size.
Validated at ``gateway config check``, a config PATCH, a reload and start-up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Settings, validation_message

SECTION = "acp_gateway"


class AcpGatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_gates: dict[str, str] = Field(
        default_factory=dict,
        description="agent id -> a policy gate a caller needs (besides "
        "`allow_agent_sessions`) to reach that agent at `/acp`",
    )
    http_idle_seconds: float = Field(
        300.0,
        ge=1,
        le=86400,
        description="an ACP connection over HTTP (`POST /acp`) with no request and no open "
        "stream for this long ends",
    )
    max_frame_bytes: int = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="one JSON-RPC text frame at most"
    )


def parse(settings: Settings) -> tuple[AcpGatewayConfig, list[str]]:
    section = dict(settings.plugin_section(SECTION))
    section.pop("enabled", None)
    try:
        return AcpGatewayConfig.model_validate(section), []
    except ValidationError as exc:
        return AcpGatewayConfig(), [validation_message(exc, f"plugins.{SECTION}.")[0]]


def problems(settings: Settings) -> list[str]:
    return parse(settings)[1]


def configured(settings: Settings) -> AcpGatewayConfig:
    config, found = parse(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
