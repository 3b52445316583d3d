"""What the data APIs and the pages show, read through the other plugins' services and
filtered by the reader's ownership and gates (the pipelines service applies them)."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import GATEWAY_VERSION, Principal, context, has_service, now_ms, service
from plugins.pipelines.contract import ApprovalQuery, PipelinesAPI, RunQuery, RunRecord

RUN_STATES = ("pending", "running", "waiting", "paused", "completed", "failed", "cancelled")


def pipelines(app: Quart) -> PipelinesAPI | None:
    return service(PipelinesAPI, app=app) if has_service(PipelinesAPI, app=app) else None


def plugin_names(app: Quart) -> list[str]:
    """The plugins loaded and enabled (a disabled one is listed by the host, not loaded)."""
    return sorted(name for name, info in context(app).plugins.infos.items() if info.enabled)


async def health(app: Quart) -> dict[str, Any]:
    ctx = context(app)
    state = await ctx.lifecycle.state()
    return {
        "status": "draining" if ctx.lifecycle.draining else "ok",
        "state": state,
        "version": GATEWAY_VERSION,
        "uptime_seconds": round(ctx.lifecycle.uptime_seconds, 1),
        "plugins": plugin_names(app),
        "features": features(app),
        "generated_ms": now_ms(),
    }


def features(app: Quart) -> dict[str, bool]:
    """Which data sources the dashboard found: a page or panel whose source is off says so."""
    loaded = set(plugin_names(app))
    return {
        "pipelines": has_service(PipelinesAPI, app=app),
        "sessions": "sessions" in loaded,
        "openai_compat": "openai_compat" in loaded,
        "audit": "audit" in loaded,
        "safety": "safety" in loaded,
    }


async def recent_runs(app: Quart, reader: Principal, limit: int = 20) -> list[RunRecord]:
    """The newest runs ``reader`` may read."""
    api = pipelines(app)
    if api is None:
        return []
    return (await api.list_runs(RunQuery(limit=limit), reader)).runs


async def runs_by_state(app: Quart, reader: Principal) -> dict[str, int]:
    """Every run ``reader`` may read, by state (counted by the pipelines service in SQL)."""
    api = pipelines(app)
    counts = (await api.run_counts(reader)).by_status if api is not None else {}
    return {state: counts.get(state, 0) for state in RUN_STATES}


async def timeline(
    app: Quart, reader: Principal, start_ms: int, end_ms: int, buckets: int
) -> dict[str, Any]:
    """Per bucket: runs created (queued), started, completed, failed in it, and how many
    were running at its end (counted by the pipelines service in SQL)."""
    api = pipelines(app)
    if api is None:
        return {
            "start_ms": start_ms,
            "end_ms": end_ms,
            "bucket_ms": 0,
            "buckets": [],
            "sources": [],
        }
    return {**await api.run_timeline(reader, start_ms, end_ms, buckets), "sources": ["runs"]}


async def pending_approvals(app: Quart, reader: Principal) -> list[dict[str, Any]]:
    api = pipelines(app)
    if api is None:
        return []
    found = await api.list_approvals(ApprovalQuery(status="pending", limit=200), reader)
    return [a.model_dump() for a in found.approvals]
