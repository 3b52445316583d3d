"""``[plugins.cortex]``: the model the copilot asks and its limits. Every problem names
its key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Settings

SECTION = "cortex"
PREFIX = f"plugins.{SECTION}."


class CortexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "echo", min_length=1, max_length=200, description="a gateway model ([models.<name>])"
    )
    max_tool_rounds: int = Field(
        4, ge=1, le=16, description="model turns that may call tools before it must answer"
    )
    max_tool_result_chars: int = Field(
        20000, ge=500, le=200000, description="a tool result is cut here before the model sees it"
    )
    timeout_seconds: float = Field(
        120.0, ge=1, le=1800, description="the whole answer, tool calls included"
    )
    system_prompt: str | None = Field(
        None, max_length=20000, description="replaces the built-in instructions"
    )


def parse(settings: Settings) -> tuple[CortexConfig, list[str]]:
    try:
        return CortexConfig.model_validate(settings.plugin_section(SECTION)), []
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error.get("loc", ()))
            found.append(f"{PREFIX}{loc}: {error.get('msg', 'invalid value')}")
        return CortexConfig(), found


def problems(settings: Settings) -> list[str]:
    return parse(settings)[1]


def configured(settings: Settings) -> CortexConfig:
    config, found = parse(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return config
