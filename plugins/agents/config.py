"""The agents the gateway runs (``[agents.<id>]``, a top-level table like ``[models]``)
and the plugin's own section (``[plugins.agents]``). Validated at ``gateway config
check``, a config PATCH, a reload and start-up; every problem names its key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from host.api import GatewayError, Settings, validation_message

SECTION = "agents"
AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ToolKind = Literal["read", "edit", "delete", "move", "search", "execute", "think", "fetch", "other"]


class AgentConfig(BaseModel):
    """``[agents.<id>]``: one ACP agent the gateway starts as a subprocess."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(
        ..., min_length=1, description="the agent's command line; it speaks ACP on stdio"
    )
    cwd: str | None = Field(
        None,
        description="the root of the agent's session workspaces (default: "
        "`<state_dir>/agents/<id>`); a session's workspace is a folder in it",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment variables added to a small default set"
    )
    max_sessions: int = Field(8, ge=1, le=1000, description="open sessions of this agent")
    idle_ttl_seconds: float = Field(
        1800.0, ge=1, le=30 * 86400, description="an idle session expires after this long"
    )
    start_timeout_seconds: float = Field(
        30.0, ge=0.1, le=600, description="starting the agent and opening its session"
    )
    prompt_timeout_seconds: float = Field(
        600.0, ge=1, le=86400, description="one prompt's turn at most (then it is cancelled)"
    )
    permission_timeout_seconds: float = Field(
        300.0, ge=1, le=86400, description="a permission request waits this long, then is refused"
    )
    terminal: bool = Field(
        False, description="offer the agent terminals (commands run in its workspace)"
    )
    auto_approve: list[ToolKind] = Field(
        default_factory=list,
        description="tool kinds whose permission requests are allowed without asking",
    )
    auto_deny: list[ToolKind] = Field(
        default_factory=list,
        description="tool kinds whose permission requests are refused without asking",
    )

    def root(self, agent_id: str, state_dir: Path, config_dir: Path | None) -> Path:
        if self.cwd is None:
            return state_dir / "agents" / agent_id
        path = Path(self.cwd).expanduser()
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        return path


class PluginConfig(BaseModel):
    """``[plugins.agents]``."""

    model_config = ConfigDict(extra="forbid")

    sweep_seconds: float = Field(
        10.0, ge=0.05, le=3600, description="how often idle sessions are looked for"
    )


def _agents_table(settings: Settings) -> Any:
    return settings.extra_section(SECTION) or {}


def parse(settings: Settings) -> tuple[PluginConfig, dict[str, AgentConfig], list[str]]:
    found: list[str] = []
    section = dict(settings.plugin_section(SECTION))
    section.pop("enabled", None)
    try:
        plugin = PluginConfig.model_validate(section)
    except ValidationError as exc:
        found.append(validation_message(exc, f"plugins.{SECTION}.")[0])
        plugin = PluginConfig()
    agents: dict[str, AgentConfig] = {}
    table = _agents_table(settings)
    if not isinstance(table, dict):
        return plugin, agents, [*found, f"{SECTION}: must be a table of agents ([agents.<id>])"]
    for agent_id, raw in table.items():
        if not AGENT_ID.match(str(agent_id)):
            found.append(f"{SECTION}.{agent_id}: an agent id is 1 to 100 letters, digits, _ . -")
            continue
        if not isinstance(raw, dict):
            found.append(f"{SECTION}.{agent_id}: must be a table")
            continue
        if "url" in raw:
            found.append(
                f"{SECTION}.{agent_id}.url: remote agents (ACP over WebSocket) are not "
                "supported yet; run the agent with `command`"
            )
            continue
        try:
            agents[agent_id] = AgentConfig.model_validate(raw)
        except ValidationError as exc:
            found.append(validation_message(exc, f"{SECTION}.{agent_id}.")[0])
    return plugin, agents, found


def problems(settings: Settings) -> list[str]:
    return parse(settings)[2]


def configured(settings: Settings) -> tuple[PluginConfig, dict[str, AgentConfig]]:
    plugin, agents, found = parse(settings)
    if found:
        raise GatewayError(400, "config_invalid", "; ".join(found))
    return plugin, agents
