"""Request and response bodies of the training routes."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plugins.training.config import Collection, Source

MAX_INT64 = 2**63 - 1
Outcome = Literal["completed", "failed", "cancelled", "incomplete"]
Label = Literal["good", "bad", "neutral"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Feedback(BaseModel):
    label: Label | None = None
    comment: str | None = None
    by: str
    at_ms: int


class RolloutRecord(BaseModel):
    id: str
    source: Source
    run_id: str | None = Field(None, description="the pipeline run it records (source runs)")
    pipeline_id: str | None = None
    response_id: str | None = Field(
        None, description="the conversation's latest response (source responses or chat)"
    )
    session_key: str | None = Field(None, description="the conversation's session key")
    model: str | None = None
    outcome: Outcome
    owner: str | None = None
    created_by: str | None = None
    messages: list[dict[str, Any]] = Field(description="the trajectory, chat fine-tuning shape")
    tools: list[dict[str, Any]] | None = None
    details: dict[str, Any] = Field(description="steps of a run, turns of a conversation")
    turns: int
    redactions: int = Field(description="texts and values redacted before storing")
    reward: float | None = None
    feedback: Feedback | None = None
    created_ms: int
    updated_ms: int


class RolloutList(BaseModel):
    rollouts: list[RolloutRecord]
    next_before: int | None = Field(None, description="pass as ?before= for the next page")


class Filters(BaseModel):
    """What both the listing and an export select by."""

    source: Source | None = None
    outcome: Outcome | None = None
    model: str | None = Field(None, max_length=200)
    pipeline_id: str | None = Field(None, max_length=200)
    label: Label | None = Field(None, description="human feedback label")
    min_reward: float | None = Field(None, description="reward at least this (rated ones only)")
    has_feedback: bool | None = Field(
        None, description="with (true) or without (false) a reward or label"
    )
    since_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="recorded at or after")
    until_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="recorded before")

    @field_validator("min_reward")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class RolloutQuery(Filters):
    run_id: str | None = Field(None, max_length=64)
    response_id: str | None = Field(None, max_length=100)
    limit: int = Field(50, ge=1, le=500)
    before: int | None = Field(
        None, ge=0, le=MAX_INT64, description="the next_before of the previous page"
    )


class FeedbackRequest(_Body):
    reward: float | None = Field(None, ge=-1e6, le=1e6, description="a scalar reward")
    label: Label | None = None
    comment: str | None = Field(None, max_length=4000)

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.reward is None and self.label is None and self.comment is None:
            raise ValueError("send at least one of reward, label, comment")
        if self.reward is not None and not math.isfinite(self.reward):
            raise ValueError("reward must be a finite number")
        return self


class ConfigPatch(_Body):
    """Any of the collection settings (documented shape; the handler validates)."""

    enabled: bool | None = None
    sample_rate: float | None = Field(None, ge=0, le=1)
    sources: list[Source] | None = None
    redact_safety: bool | None = None
    redact_keys: list[str] | None = None
    export_batch_size: int | None = Field(None, ge=1, le=10000)


class ConfigResponse(BaseModel):
    config: Collection
    changed: list[str] = Field(default_factory=list, description="keys this request changed")
    updated_ms: int | None = Field(None, description="when the stored settings last changed")
    updated_by: str | None = None


class ExportRequest(_Body, Filters):
    limit: int | None = Field(
        None, ge=1, le=10_000_000, description="at most this many rollouts, oldest first"
    )


class ExportRecord(BaseModel):
    id: str
    status: Literal["completed", "failed"]
    file: str | None = Field(None, description="the JSONL dataset (on the exporting host)")
    filters: dict[str, Any]
    rollouts: int = Field(description="lines written")
    skipped: int = Field(description="rollouts that did not fit the fine-tuning format")
    batches: int = Field(description="batches handed to trainer plugins")
    bytes: int
    sha256: str | None = None
    error: str | None = None
    created_by: str | None = None
    created_ms: int
    finished_ms: int | None = None


class ExportList(BaseModel):
    exports: list[ExportRecord]


class QueueStatus(BaseModel):
    pending: int = Field(description="finished runs and conversations waiting, this process")
    recorded: int
    sampled_out: int
    dropped: int = Field(description="dropped because the queue was full")
    failed: int


class TrainingStatus(BaseModel):
    collecting: bool
    config: Collection
    counts: dict[str, Any] = Field(
        description="the caller's visible rollouts: total, by_outcome, by_source, with_feedback"
    )
    queue: QueueStatus
    last_export: ExportRecord | None = None
    trainers: list[str] = Field(description="plugins implementing gateway_training_batch")
