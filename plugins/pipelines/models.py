"""Request and response bodies of the pipelines routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatus = Literal["pending", "running", "waiting", "paused", "completed", "failed", "cancelled"]


class PipelineSummary(BaseModel):
    id: str
    description: str
    version: str
    source: str
    steps: int


class PipelineList(BaseModel):
    pipelines: list[PipelineSummary]
    errors: dict[str, str] = Field(
        default_factory=dict, description="pipeline files that failed to load, with the error"
    )


class PipelineDetail(BaseModel):
    id: str
    description: str
    version: str
    source: str
    steps: list[dict[str, Any]]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRequest(_Body):
    input: dict[str, Any] = Field(default_factory=dict, description="the pipeline's input")


class RunRequest(StartRequest):
    wait_seconds: float = Field(
        30.0, gt=0, le=300, description="answer with the run's current state after this long"
    )


class ResumeRequest(_Body):
    input: Any = Field(None, description="the input the waiting step asked for")


class DecisionRequest(_Body):
    reason: str | None = Field(None, max_length=2000)


class StepResult(BaseModel):
    step_id: str
    status: Literal["completed", "failed", "skipped"]
    attempts: int
    output: Any = None
    error: str | None = None
    started_ms: int
    finished_ms: int
    duration_ms: int


class RunDefinition(BaseModel):
    """The pipeline definition a run started with, and keeps (also across restarts)."""

    version: str
    fingerprint: str = Field(
        description="directory pipelines: sha256:<hex> of the module source; plugin-registered: "
        "code:sha256:<hex> of the version and step tree (functions by module and qualname)"
    )
    origin: Literal["directory", "hook"]
    source: str = Field(description="the module's file name, or hook")


class RunRecord(BaseModel):
    id: str
    pipeline_id: str
    pipeline_version: str
    definition: RunDefinition | None = Field(
        None,
        description="the definition the run started with (none on runs from before it was stored)",
    )
    status: RunStatus
    input: dict[str, Any]
    output: Any = None
    error: dict[str, Any] | None = None
    steps: list[StepResult] = Field(
        default_factory=list,
        description="finished steps in order; a nested step's step_id is its path "
        "(review.approve, count[2].tick)",
    )
    next_step_index: int
    waiting_for: dict[str, Any] | None = None
    paused_at: str | None = None
    trigger: dict[str, Any]
    idempotency_key: str | None = None
    created_by: str | None = None
    owner: str | None = Field(
        None,
        description="who owns the run: its starter's principal key (token:ci), its "
        "schedule's owner, or webhook:<name>; null on runs from before owners",
    )
    created_ms: int
    started_ms: int | None = None
    updated_ms: int
    finished_ms: int | None = None
    claims: int


class StartResponse(BaseModel):
    runId: str
    status: RunStatus
    created: bool = Field(description="false when an Idempotency-Key repeat found the run")
    events: str = Field(description="the run's event stream")


MAX_INT64 = 2**63 - 1


class RunQuery(BaseModel):
    pipeline: str | None = None
    status: RunStatus | None = None
    # Bounded to what the store's 64-bit integers hold: a larger value is a 400, not a 500.
    since_ms: int | None = Field(
        None, ge=0, le=MAX_INT64, description="created at or after (Unix ms)"
    )
    until_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="created before (Unix ms)")
    limit: int = Field(50, ge=1, le=500)
    before: int | None = Field(
        None, ge=0, le=MAX_INT64, description="the next_before of the previous page"
    )


class RunList(BaseModel):
    runs: list[RunRecord]
    next_before: int | None = Field(None, description="pass as ?before= for the next page")


class ApprovalRecord(BaseModel):
    id: str = Field(
        description="what `POST /approvals/{id}/approve|deny` takes: a run's approval gate "
        "is its run id, another plugin's approval (an agent's permission request) `apr_...`"
    )
    source: str = Field(
        "pipeline_run", description="who asks: `pipeline_run`, or a plugin's (`agent_session`)"
    )
    subject: str | None = Field(None, description="which one asks (an agent session id)")
    run_id: str | None = None
    step_id: str | None = None
    pipeline_id: str | None = None
    status: str
    message: str
    details: dict[str, Any] | None = None
    owner: str | None = None
    requested_ms: int
    expires_ms: int | None = None
    on_timeout: str | None = None
    resolved_ms: int | None = None
    approver: str | None = None
    reason: str | None = None


class ApprovalQuery(BaseModel):
    status: Literal["pending", "approved", "denied", "timed_out", "cancelled", "all"] = "pending"
    limit: int = Field(100, ge=1, le=1000)


class ApprovalList(BaseModel):
    approvals: list[ApprovalRecord]


class BreakpointRequest(_Body):
    step_id: str = Field(
        ...,
        min_length=1,
        max_length=200,
        pattern=r"^(?:[^.\[\]#]+(?:\[[0-9]+\])?\.)*[^.\[\]#]+$",
        description="a step id (pauses before that step at any depth, in every loop pass) "
        "or a step path (`review.approve`, `rounds[1].reply`: only there)",
    )
    pipeline_id: str | None = Field(
        None, max_length=200, description="only this pipeline (default: every pipeline)"
    )


class Breakpoint(BaseModel):
    step_id: str
    pipeline_id: str | None = None
    created_by: str | None = None
    owner: str | None = Field(
        None, description="the owner's principal key (token:ci); null on records from before owners"
    )
    created_ms: int


class BreakpointList(BaseModel):
    breakpoints: list[Breakpoint]


class Deleted(BaseModel):
    deleted: str


class ScheduleRequest(_Body):
    id: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="default: generated",
    )
    pipeline_id: str = Field(..., min_length=1, max_length=200)
    cron: str | None = Field(None, max_length=200, description="5-field cron expression")
    interval_seconds: float | None = Field(None, ge=1, le=366 * 86400)
    timezone: str = Field("UTC", max_length=100, description="IANA time zone of the cron")
    input: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "queue", "cancel"] = "skip"


class ScheduleRecord(BaseModel):
    id: str
    pipeline_id: str
    cron: str | None = None
    interval_seconds: float | None = None
    timezone: str
    input: dict[str, Any]
    overlap: str
    created_by: str | None = None
    owner: str | None = Field(
        None, description="the owner's principal key (token:ci); null on records from before owners"
    )
    created_ms: int
    next_fire_ms: int
    last_fire_ms: int | None = None
    last_outcome: str | None = None
    last_run_id: str | None = None
    missed: int
    suspended: Literal["owner_removed"] | None = Field(
        None,
        description="owner_removed: its owner can no longer sign in (a token removed from "
        "auth.tokens); it does not fire until the owner is back",
    )


class ScheduleList(BaseModel):
    schedules: list[ScheduleRecord]


class TriggerRecord(BaseModel):
    id: str
    type: Literal["manual", "schedule", "webhook"]
    pipeline_id: str
    description: str


class TriggerList(BaseModel):
    triggers: list[TriggerRecord]


class FireRequest(_Body):
    input: dict[str, Any] | None = Field(
        None, description="manual triggers: the run input (schedule triggers use their own)"
    )


class FireResponse(BaseModel):
    trigger_id: str
    outcome: str
    runId: str | None = None


class WebhookPayload(BaseModel):
    """Any JSON object: it becomes the run input (validated against the pipeline's schema)."""

    model_config = ConfigDict(extra="allow")
