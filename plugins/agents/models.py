"""Request and response bodies of the agent session routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["active", "idle", "closed", "expired"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenRequest(_Body):
    agent: str = Field(..., min_length=1, max_length=100, description="an `[agents.<id>]` id")
    workspace: str | None = Field(
        None,
        min_length=1,
        max_length=1000,
        description="a folder inside the agent's root (`cwd`), made if missing; default: "
        "the root itself",
    )
    metadata: dict[str, Any] | None = Field(None, description="kept with the session")


class PromptRequest(_Body):
    text: str = Field(..., min_length=1, max_length=200_000, description="the prompt")
    wait: bool = Field(
        False, description="answer when the agent's turn ends (200), not when it starts (202)"
    )


class PruneRequest(_Body):
    older_than_seconds: float | None = Field(
        None,
        ge=0,
        le=10 * 365 * 86400,
        description="remove only sessions last active this long ago (default: every closed "
        "or expired one)",
    )


class AgentSession(BaseModel):
    id: str
    agent_id: str
    acp_session_id: str | None = Field(None, description="the agent's own session id")
    workspace: str
    state: State
    attached: bool = Field(description="its agent process runs in this gateway process")
    owner: str | None = None
    created_by: str | None = None
    run_id: str | None = Field(None, description="the pipeline run whose agent step opened it")
    metadata: dict[str, Any] | None = None
    created_ms: int
    last_seen_ms: int
    closed_ms: int | None = None
    close_reason: str | None = None


class AgentSessionList(BaseModel):
    sessions: list[AgentSession]


class SessionQuery(BaseModel):
    state: State | None = None
    agent: str | None = Field(None, max_length=100)
    limit: int = Field(100, ge=1, le=1000)


class PromptAccepted(BaseModel):
    session: AgentSession
    stop_reason: str | None = Field(
        None, description="with `wait`: why the agent's turn ended (`end_turn`, `cancelled`, ...)"
    )
    events_after: int = Field(
        description="the stream position before the prompt: read the session's events after it"
    )


class PruneResponse(BaseModel):
    removed: list[str] = Field(description="the sessions removed, with their events")
    expired: list[str] = Field(description="idle sessions past their TTL, expired first")
