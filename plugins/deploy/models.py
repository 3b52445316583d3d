"""Request and response bodies of the deploy routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1, max_length=200, pattern=NAME)
    kind: str | None = Field(
        None, max_length=100, description="the agent kind (pipeline, ...); needed for a new version"
    )
    version: str | None = Field(
        None, min_length=1, max_length=100, pattern=NAME, description="the version to make live"
    )
    spec: dict[str, Any] | None = Field(
        None, description="the version's model and settings, validated by its kind"
    )
    rollback_to: str | None = Field(
        None, min_length=1, max_length=100, description="make an earlier version live again"
    )
    expected_version: str | None = Field(
        None,
        max_length=100,
        description="refuse (409 version_conflict) unless this is the live version now",
    )
    reason: str | None = Field(None, max_length=1000)
    policy_gate: str | None = None


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=1000)
    policy_gate: str | None = None


class VersionRecord(BaseModel):
    version: str
    created_ms: int
    created_by: str | None
    live: bool


class SwitchRecord(BaseModel):
    action: str
    from_version: str | None
    to_version: str | None
    by: str | None
    reason: str | None
    at_ms: int


class AgentRecord(BaseModel):
    agent_id: str
    kind: str
    state: Literal["live", "stopped"]
    live_version: str | None
    live_spec: dict[str, Any] | None
    previous_version: str | None = Field(None, description="live before this action")
    versions: list[VersionRecord] = Field(description="newest first")
    history: list[SwitchRecord] = Field(description="the last 20 switches, newest first")
    cancelled: list[str] = Field(
        default_factory=list, description="work a stop cancelled (run ids, session ids)"
    )
    changed: bool = True
