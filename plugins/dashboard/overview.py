"""What the data APIs and the pages show, read through the other plugins' services and
filtered by the reader's ownership and gates (the pipelines service applies them)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from quart import Quart

from host.api import GATEWAY_VERSION, Principal, context, has_service, now_ms, service
from plugins.dashboard.config import DashboardConfig
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


async def recent_runs(
    app: Quart, reader: Principal, config: DashboardConfig, since_ms: int | None = None
) -> list[RunRecord]:
    """The runs ``reader`` may read, newest first, at most ``max_runs_scanned``."""
    api = pipelines(app)
    if api is None:
        return []
    found: list[RunRecord] = []
    before: int | None = None
    while len(found) < config.max_runs_scanned:
        page = await api.list_runs(RunQuery(limit=500, before=before, since_ms=since_ms), reader)
        found.extend(page.runs)
        if page.next_before is None:
            break
        before = page.next_before
    return found[: config.max_runs_scanned]


def runs_by_state(runs: list[RunRecord]) -> dict[str, int]:
    counts: Counter[str] = Counter(r.status for r in runs)
    return {state: counts.get(state, 0) for state in RUN_STATES}


def timeline(runs: list[RunRecord], start_ms: int, end_ms: int, buckets: int) -> dict[str, Any]:
    """Per bucket: runs created (queued), started, completed, failed in it, and how many
    were running at its end."""
    width = max(1, (end_ms - start_ms) // buckets)
    rows = [
        {
            "start_ms": start_ms + i * width,
            "end_ms": start_ms + (i + 1) * width,
            "queued": 0,
            "started": 0,
            "completed": 0,
            "failed": 0,
            "running": 0,
        }
        for i in range(buckets)
    ]

    def bucket(ms: int | None) -> dict[str, Any] | None:
        if ms is None or ms < start_ms or ms >= start_ms + width * buckets:
            return None
        return rows[(ms - start_ms) // width]

    for run in runs:
        for key, ms in (("queued", run.created_ms), ("started", run.started_ms)):
            row = bucket(ms)
            if row is not None:
                row[key] += 1
        if run.status in ("completed", "failed"):
            row = bucket(run.finished_ms)
            if row is not None:
                row[run.status] += 1
        began = run.started_ms
        ended = run.finished_ms
        if began is not None:
            for row in rows:
                if began < row["end_ms"] and (ended is None or ended >= row["end_ms"]):
                    row["running"] += 1
    return {
        "start_ms": start_ms,
        "end_ms": start_ms + width * buckets,
        "bucket_ms": width,
        "buckets": rows,
        "sources": ["runs"],
    }


async def pending_approvals(app: Quart, reader: Principal) -> list[dict[str, Any]]:
    api = pipelines(app)
    if api is None:
        return []
    found = await api.list_approvals(ApprovalQuery(status="pending", limit=200), reader)
    return [a.model_dump() for a in found.approvals]
