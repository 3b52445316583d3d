"""Alerts computed from the state at the moment they are asked for (nothing to keep in
step): the gateway paused, approvals waiting too long, a failure rate over the
threshold, schedules that missed ticks. An alert is keyed by its ``id`` and the start of
its occurrence (``since_ms``); acknowledging one hides nothing but marks it, and a new
occurrence (another ``since_ms``) alerts afresh."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from quart import Quart

from host.api import GatewayError, Principal, context, now_ms, owner_key
from plugins.dashboard.config import DashboardConfig
from plugins.dashboard.overview import pending_approvals, pipelines
from plugins.dashboard.signals import BLOCK, PROVIDER_ERROR, Signals
from plugins.dashboard.tables import alert_acks
from plugins.pipelines.contract import RunCounts

PAUSED_KEY = "gateway.paused"  # the control state every worker reads (host lifecycle)
SIGNALS_KEY = "dashboard.signals"


def _alert(
    alert_id: str, code: str, severity: str, since_ms: int, message: str, link: str | None
) -> dict[str, Any]:
    return {
        "id": alert_id,
        "code": code,
        "severity": severity,
        "since_ms": since_ms,
        "message": message,
        "link": link,
        "acknowledged": False,
        "acknowledged_by": None,
        "acknowledged_ms": None,
    }


async def compute(app: Quart, reader: Principal, config: DashboardConfig) -> list[dict[str, Any]]:
    """The alerts ``reader`` may see, most severe first, then oldest first."""
    ctx = context(app)
    now = now_ms()
    found: list[dict[str, Any]] = []
    paused = await ctx.store.get_value(PAUSED_KEY)
    if paused and paused.get("paused"):
        found.append(
            _alert(
                "gateway_paused",
                "gateway_paused",
                "warning",
                int(paused.get("at_ms") or now),
                f"the gateway is paused (by {paused.get('by')}): no new runs start",
                "/gateway/status",
            )
        )
    if pipelines(app) is not None:
        limit_ms = config.approval_wait_seconds * 1000
        for approval in await pending_approvals(app, reader):
            waited = now - approval["requested_ms"]
            if waited >= limit_ms:
                found.append(
                    _alert(
                        f"approval_waiting:{approval['run_id']}:{approval['step_id']}",
                        "approval_waiting",
                        "warning",
                        approval["requested_ms"],
                        f"run {approval['run_id']} has waited {waited // 60000} min for "
                        f"approval at step {approval['step_id']}",
                        f"/runs/{approval['run_id']}",
                    )
                )
        api = pipelines(app)
        assert api is not None
        window_start = now - config.failure_window_seconds * 1000
        found.extend(_failure_rate(await api.run_counts(reader, window_start), config))
        for schedule in (await api.list_schedules(reader)).schedules:
            if schedule.missed > 0:
                found.append(
                    _alert(
                        f"schedule_missed:{schedule.id}",
                        "schedule_missed",
                        "warning",
                        schedule.last_fire_ms or schedule.created_ms,
                        f"schedule {schedule.id} ({schedule.pipeline_id}) missed "
                        f"{schedule.missed} tick(s)",
                        f"/schedules/{schedule.id}",
                    )
                )
    found.extend(await _signals(app, config, now))
    await _mark_acknowledged(app, found)
    rank = {"critical": 0, "warning": 1, "info": 2}
    found.sort(key=lambda a: (rank.get(a["severity"], 3), a["since_ms"], a["id"]))
    return found


def _failure_rate(finished_in_window: RunCounts, config: DashboardConfig) -> list[dict[str, Any]]:
    counts = finished_in_window.by_status
    failed_n = counts.get("failed", 0)
    finished_n = failed_n + counts.get("completed", 0)
    if finished_n < config.failure_min_runs or not finished_n:
        return []
    rate = failed_n / finished_n
    if rate <= config.failure_rate_threshold:
        return []
    # The occurrence starts at the oldest failure in the window (stable while it lasts).
    since = finished_in_window.first_finished_ms["failed"]
    return [
        _alert(
            "failure_rate",
            "failure_rate",
            "critical",
            since,
            f"{failed_n} of {finished_n} runs finished in the last "
            f"{config.failure_window_seconds // 60} min failed ({rate:.0%}, threshold "
            f"{config.failure_rate_threshold:.0%})",
            "/runs?status=failed",
        )
    ]


async def _signals(app: Quart, config: DashboardConfig, now: int) -> list[dict[str, Any]]:
    signals: Signals | None = context(app).extras.get(SIGNALS_KEY)
    if signals is None:
        return []
    found = []
    window_start = now - config.signal_window_seconds * 1000
    minutes = f"{config.signal_window_seconds / 60:g} min"
    blocks, first_block = await signals.since(BLOCK, window_start)
    if blocks >= config.safety_block_threshold and first_block is not None:
        found.append(
            _alert(
                "safety_blocks",
                "safety_blocks",
                "warning",
                first_block,
                f"{blocks} safety blocks in the last {minutes} "
                f"(threshold {config.safety_block_threshold})",
                "/gateway/events?stream=safety",
            )
        )
    errors, first_error = await signals.since(PROVIDER_ERROR, window_start)
    if errors >= config.provider_error_threshold:
        found.append(
            _alert(
                "provider_errors",
                "provider_errors",
                "critical",
                first_error or now,
                f"{errors:g} model calls failed in the last {minutes} "
                f"(threshold {config.provider_error_threshold})",
                "/metrics",
            )
        )
    return found


async def _mark_acknowledged(app: Quart, found: list[dict[str, Any]]) -> None:
    if not found:
        return
    ids = [a["id"] for a in found]
    async with context(app).store.read() as conn:
        rows = (
            await conn.execute(sa.select(alert_acks).where(alert_acks.c.alert_id.in_(ids)))
        ).all()
    acks = {(r.alert_id, r.since_ms): r for r in rows}
    for alert in found:
        row = acks.get((alert["id"], alert["since_ms"]))
        if row is not None:
            alert.update(
                acknowledged=True, acknowledged_by=row.acked_by, acknowledged_ms=row.acked_ms
            )


async def acknowledge(
    app: Quart,
    principal: Principal,
    alerts: list[dict[str, Any]],
    alert_id: str,
    note: str | None,
) -> dict[str, Any]:
    """Acknowledge the current occurrence of ``alert_id`` among ``alerts`` (those the
    principal sees); 404 ``alert_not_found`` if it is not active now."""
    alert = next((a for a in alerts if a["id"] == alert_id), None)
    if alert is None:
        raise GatewayError(404, "alert_not_found", f"no active alert {alert_id!r}")
    store = context(app).store
    now = now_ms()
    values = {
        "alert_id": alert_id,
        "since_ms": alert["since_ms"],
        "owner": owner_key(principal),
        "acked_by": principal.name,
        "acked_ms": now,
        "note": note,
    }
    async with store.write() as conn:
        await conn.execute(store.dialect.upsert(alert_acks, ["alert_id", "since_ms"], values))
    alert.update(acknowledged=True, acknowledged_by=principal.name, acknowledged_ms=now)
    return alert
