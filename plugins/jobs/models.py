"""Request and response bodies of the jobs routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StatusFilter = Literal[
    "active",
    "finished",
    "pending",
    "running",
    "waiting",
    "paused",
    "completed",
    "failed",
    "cancelled",
]


class JobsQuery(BaseModel):
    status: StatusFilter | None = Field(
        None, description="active (pending, running, waiting, paused), finished, or one status"
    )
    source: str | None = Field(None, max_length=100, description="one job source's jobs only")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(
        None, max_length=4000, description="the next_cursor of the previous page"
    )


class JobRecord(BaseModel):
    id: str = Field(description="<source>:<the source's own id>")
    source: str
    kind: str = Field(description="pipeline_run, schedule_fire, or a source's own kind")
    status: str
    owner: str | None
    created_by: str | None = None
    created_ms: int
    started_ms: int | None = None
    finished_ms: int | None = None
    progress: dict[str, Any] | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class JobList(BaseModel):
    jobs: list[JobRecord]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=1000)
    policy_gate: str | None = None
