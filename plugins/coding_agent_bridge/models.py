"""Request and response bodies of the bridge's routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenRequest(_Body):
    workspace: str = Field(
        ...,
        min_length=1,
        max_length=1000,
        description="the workspace the agent works in (a path or any name the agent uses); "
        "an open session of the caller's for the same workspace is reused",
    )
    agent: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="an ACP agent the gateway runs (`[agents.<id>]`): follow-ups become its "
        "prompts and its updates progress events; omit for an agent that reports in itself",
    )
    metadata: dict[str, Any] | None = Field(None, description="kept with the session")


class ProgressRequest(_Body):
    message: str = Field("", max_length=65536, description="what the agent did or does")
    kind: str = Field(
        "progress",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="a label of the agent's choosing (`progress`, `tool`, `test`, ...)",
    )
    data: dict[str, Any] | None = Field(None, description="structured detail")


class FollowupRequest(_Body):
    text: str = Field(..., min_length=1, max_length=100_000, description="the instruction")


class DrainRequest(_Body):
    limit: int = Field(100, ge=1, le=1000, description="hand at most this many")


class CloseRequest(_Body):
    reason: str | None = Field(None, max_length=2000)


class ReapRequest(_Body):
    idle_seconds: float | None = Field(
        None,
        ge=0,
        le=30 * 86400,
        description="expire open sessions idle this long (default: "
        "`plugins.coding_agent_bridge.idle_ttl_seconds`)",
    )


class BridgeSession(BaseModel):
    session_id: str
    workspace: str
    agent: str | None = None
    agent_session_id: str | None = None
    state: Literal["open", "closed", "expired"]
    owner: str | None = None
    created_by: str | None = None
    metadata: dict[str, Any] | None = None
    created_ms: int
    last_seen_ms: int
    closed_ms: int | None = None
    close_reason: str | None = None
    followups_queued: int = 0
    last_event_seq: int = 0
    reused: bool = Field(False, description="open: an open session was reused")


class BridgeSessionList(BaseModel):
    sessions: list[BridgeSession]


class ProgressEvent(BaseModel):
    session_id: str
    seq: int = Field(description="its seq on the session's stream (`Last-Event-ID`)")
    type: str
    ts_ms: int
    data: dict[str, Any]


class Followup(BaseModel):
    id: str
    session_id: str
    text: str
    status: Literal["queued", "drained"]
    created_by: str | None = None
    created_ms: int
    drained_ms: int | None = None
    drained_by: str | None = None


class FollowupQueued(BaseModel):
    followup: Followup
    queued: int = Field(description="follow-ups of the session waiting now")
    redacted: bool = Field(False, description="a safety scanner redacted the text")


class DrainResponse(BaseModel):
    session_id: str
    followups: list[Followup]
    remaining: int


class ReapResponse(BaseModel):
    reaped: list[str]
    idle_seconds: float
