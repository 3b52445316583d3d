"""Request and response bodies of the audit routes."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_INT64 = 2**63 - 1
# A filter value: no NUL (PostgreSQL text cannot hold one), no longer than any column.
FilterText = Annotated[str, StringConstraints(max_length=300, pattern=r"^[^\x00]*$")]


class AuditFilter(BaseModel):
    """Which records: every filter is an exact match; the window is ``[since_ms, until_ms)``."""

    model_config = ConfigDict(extra="forbid")

    source: FilterText | None = Field(
        None, description="request | auth | safety | approval | config | plugin | retention"
    )
    action: FilterText | None = Field(None, description="e.g. 'POST /runs/<run_id>/approve'")
    actor: FilterText | None = Field(None, description="a Principal.key, e.g. 'token:ci'")
    reason_code: FilterText | None = None
    outcome: FilterText | None = Field(None, description="success | denied | refused | error | ...")
    since_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="at or after (Unix ms)")
    until_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="before (Unix ms)")


class AuditLogQuery(AuditFilter):
    limit: int = Field(100, ge=1, le=1000)
    cursor: int | None = Field(
        None, ge=1, le=MAX_INT64, description="the next_cursor of the previous page"
    )


class AuditSummaryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="at or after (Unix ms)")
    until_ms: int | None = Field(None, ge=0, le=MAX_INT64, description="before (Unix ms)")


class AuditRecordModel(BaseModel):
    seq: int
    ts_ms: int
    source: str
    action: str
    actor: str | None
    target: str | None
    outcome: str
    status: int | None
    reason_code: str | None
    request_id: str | None
    client: str | None
    method: str | None
    route: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditLogPage(BaseModel):
    records: list[AuditRecordModel] = Field(description="newest first")
    next_cursor: int | None = Field(None, description="pass as ?cursor= for the next page")


class AuditSummary(BaseModel):
    since_ms: int | None
    until_ms: int | None
    total: int
    by_source: dict[str, int]
    by_action: dict[str, int]
    by_actor: dict[str, int] = Field(description="records with no actor count under '-'")
    by_reason_code: dict[str, int] = Field(description="records with a reason code only")
    by_outcome: dict[str, int]


class BrokenLink(BaseModel):
    seq: int
    problem: str = Field(description="altered | relinked | missing | unanchored | head_mismatch")
    message: str


class AuditVerification(BaseModel):
    ok: bool
    records: int = Field(description="records checked")
    first_seq: int | None
    last_seq: int | None
    head_seq: int
    head_hash: str
    broken: BrokenLink | None = Field(description="the first broken link; null when ok")
