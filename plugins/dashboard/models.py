"""Request and response bodies of the dashboard data APIs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthResponse(BaseModel):
    status: str = Field(description="ok, or draining while the gateway shuts down")
    state: str = Field(description="running or paused")
    version: str
    uptime_seconds: float
    plugins: list[str] = Field(description="the plugins loaded")
    features: dict[str, bool] = Field(
        description="which data sources the dashboard found (a panel whose source is off "
        "says it is disabled)"
    )
    runs_by_state: dict[str, int] | None = Field(
        None, description="the caller's runs by state (everyone's with the read-all gate)"
    )
    approvals_pending: int | None = None
    alerts_active: int = 0
    generated_ms: int


class WidgetView(BaseModel):
    name: str
    plugin: str
    title: str
    data: dict[str, Any] | None = None
    error: str | None = None


class WidgetList(BaseModel):
    widgets: list[WidgetView]


class TimelineQuery(BaseModel):
    window_seconds: int = Field(3600, ge=60, le=30 * 86400, description="how far back")
    buckets: int = Field(30, ge=1, le=500, description="how many time buckets")


class TimelineBucket(BaseModel):
    start_ms: int
    end_ms: int
    queued: int = Field(description="runs created in the bucket")
    started: int
    completed: int
    failed: int
    running: int = Field(description="runs running at the bucket's end")


class TimelineResponse(BaseModel):
    start_ms: int
    end_ms: int
    bucket_ms: int
    buckets: list[TimelineBucket]
    sources: list[str] = Field(description="what is counted (runs; jobs when a plugin offers them)")


class Alert(BaseModel):
    id: str = Field(description="stable while the condition lasts (approval_waiting:<run>:<step>)")
    code: str = Field(description="gateway_paused, approval_waiting, failure_rate, schedule_missed")
    severity: Literal["critical", "warning", "info"]
    since_ms: int
    message: str
    link: str | None = Field(None, description="the API path of what caused it")
    acknowledged: bool
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None


class AlertList(BaseModel):
    alerts: list[Alert]


class ActionRequest(_Body):
    action: Literal["pause", "resume", "refresh", "ack"]
    alert_id: str | None = Field(
        None, min_length=1, max_length=300, description="the alert to acknowledge (ack)"
    )
    note: str | None = Field(None, max_length=2000)
    reason: str | None = Field(None, max_length=2000)


class ActionResponse(BaseModel):
    action: str
    outcome: str
    state: str | None = None
    alert: Alert | None = None


class HtmlPage(RootModel[str]):
    """An HTML page (``text/html``), or a 303 to ``/ops/login`` without a session."""


class StaticAsset(RootModel[str]):
    """A script or a style sheet of the pages."""
