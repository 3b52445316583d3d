"""``POST /gateway/ui/telemetry``: batched UI events, bounded in size and rate per
principal, stored before the 202."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from host.api import (
    GatewayError,
    Principal,
    context,
    current_principal,
    now_ms,
    owner_key,
    requires_gate,
)
from plugins.ui_telemetry import store
from plugins.ui_telemetry.config import configured

bp = Blueprint("ui_telemetry", __name__)
GATE = "allow_ui_telemetry"
BUCKETS_KEY = "ui_telemetry.buckets"


class UiEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    view: str = Field(min_length=1, max_length=200, description="the screen: chat, runs, ...")
    action: str = Field(min_length=1, max_length=200, description="what happened: open, click")
    session: str | None = Field(None, max_length=200, description="the UI session's id")
    ts_ms: int | None = Field(None, ge=0, le=2**63 - 1, description="client time (Unix ms)")
    metadata: dict[str, Any] | None = None


class TelemetryBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[UiEvent] = Field(min_length=1)
    policy_gate: str | None = None


class TelemetryAccepted(BaseModel):
    accepted: int


class Bucket:
    """A token bucket of events per minute (per principal, per worker)."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.rate = per_minute / 60.0
        self.at = time.monotonic()

    def take(self, n: int) -> float:
        """0 when ``n`` tokens were taken; else the seconds until they will be there."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n <= self.tokens:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


def _admit(principal: Principal, n: int, per_minute: int) -> None:
    buckets: dict[str, Bucket] = context().extras.setdefault(BUCKETS_KEY, {})
    bucket = buckets.get(principal.key)
    if bucket is None or bucket.capacity != per_minute:
        bucket = buckets[principal.key] = Bucket(per_minute)
    wait = bucket.take(n)
    if wait:
        raise GatewayError(
            429,
            "telemetry_rate_limited",
            f"more than {per_minute} UI events a minute; retry in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )


@bp.post("/gateway/ui/telemetry")
@requires_gate(GATE)
@validate_request(TelemetryBatch)
@validate_response(TelemetryAccepted, 202)
async def ingest(data: TelemetryBatch) -> tuple[TelemetryAccepted, int]:
    """Store a batch of UI events (view, action, session, client time, metadata) for the
    audit summary and the dashboard; 202 once stored. At most ``max_batch_events`` per
    batch and ``max_metadata_bytes`` of metadata per event (400 naming the event), at
    most ``events_per_minute`` per principal (429 ``telemetry_rate_limited``)."""
    config = configured(context().settings)
    if len(data.events) > config.max_batch_events:
        raise GatewayError(
            400,
            "invalid_request_body",
            f"events: at most {config.max_batch_events} events per batch",
            param="events",
        )
    rows = []
    principal = current_principal()
    received = now_ms()
    for i, event in enumerate(data.events):
        size = len(json.dumps(event.metadata, separators=(",", ":"))) if event.metadata else 0
        if size > config.max_metadata_bytes:
            raise GatewayError(
                400,
                "invalid_request_body",
                f"events.{i}.metadata: {size} bytes, at most {config.max_metadata_bytes}",
                param=f"events.{i}.metadata",
            )
        rows.append(
            {
                "received_ms": received,
                "owner": owner_key(principal),
                "session": event.session,
                "view": event.view,
                "action": event.action,
                "ts_ms": event.ts_ms,
                "event_metadata": event.metadata,
            }
        )
    _admit(principal, len(rows), config.events_per_minute)
    await store.insert(context().store, rows)
    return TelemetryAccepted(accepted=len(rows)), 202
