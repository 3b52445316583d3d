"""The agents the gateway runs (``[agents.<id>]``, a top-level table like ``[models]``)
and the plugin's own section (``[plugins.agents]``). Validated at ``gateway config
check``, a config PATCH, a reload and start-up; every problem names its key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from host.api import GatewayError, Secret, Settings, validation_message

SECTION = "agents"
AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ToolKind = Literal["read", "edit", "delete", "move", "search", "execute", "think", "fetch", "other"]
Permissions = Literal["both", "editor", "queue"]
LOOPBACK = ("localhost", "127.0.0.1", "::1")


class AgentConfig(BaseModel):
    """``[agents.<id>]``: one ACP agent, started as a subprocess (``command``, ACP on
    stdio) or reached over the network (``url``, ACP over WebSocket)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        description="a remote agent: its ACP WebSocket endpoint (`wss://`, or `ws://` to a "
        "loopback host); exclusive with `command`",
    )
    command: list[str] | None = Field(
        None,
        min_length=1,
        validate_default=True,
        description="the agent's command line; it speaks ACP on stdio",
    )
    headers: dict[str, Secret] = Field(
        default_factory=dict,
        description="headers of the WebSocket handshake of a `url` agent; each value a "
        'string, `{ env = "NAME" }` or `{ file = "path" }`',
    )
    reconnect_max_seconds: float = Field(
        10.0,
        ge=0.1,
        le=600,
        description="a `url` agent: the longest pause between connection attempts (the "
        "back-off doubles from 0.1 s up to it)",
    )
    permissions: Permissions = Field(
        "both",
        description="where a permission request is asked: `queue` (the approvals queue), "
        "`editor` (the editor connected at `/acp`; the queue when none is), `both` "
        "(whichever answers first)",
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

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("must be a ws:// or wss:// URL")
        if parts.scheme == "ws" and parts.hostname not in LOOPBACK:
            raise ValueError("ws:// (unencrypted) only to a loopback host; use wss://")
        return url

    @field_validator("command")
    @classmethod
    def _command_or_url(cls, command: list[str] | None, info: ValidationInfo) -> Any:
        if (command is None) == (info.data.get("url") is None):
            raise ValueError("set exactly one of command (stdio) and url (ACP over WebSocket)")
        return command

    @model_validator(mode="after")
    def _one_transport(self) -> AgentConfig:
        if self.url is None:
            if self.headers:
                raise ValueError("headers go with url")
            return self
        if self.env:
            raise ValueError("env goes with command, not url")
        return self

    @property
    def remote(self) -> bool:
        return self.url is not None

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
