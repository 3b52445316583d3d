"""The dashboard data APIs of seed 004 (``/dashboard/health``, ``/widgets``,
``/queue-timeline``, ``/alerts``, ``/actions``, ``/stream``): protected like every API
(a bearer token, or the pages' cookie with its CSRF token on POST)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Quart, Response, current_app, request
from quart_schema import (
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from host.api import (
    ErrorResponse,
    GatewayError,
    Principal,
    context,
    current_principal,
    document_stream,
    live_response,
    now_ms,
)
from plugins.dashboard import alerts as alert_rules
from plugins.dashboard import overview
from plugins.dashboard.config import DashboardConfig, configured
from plugins.dashboard.feed import Feed, notice_of
from plugins.dashboard.gates import GATE_ACT, GATE_CONTROL
from plugins.dashboard.models import (
    ActionRequest,
    ActionResponse,
    AlertList,
    HealthResponse,
    TimelineQuery,
    TimelineResponse,
    WidgetList,
    WidgetView,
)

bp = Blueprint("dashboard_api", __name__)
FEED_KEY = "dashboard.feed"
STREAM = "dashboard"  # the event stream of dashboard actions (the audit plugin reads it)


def config(app: Quart | None = None) -> DashboardConfig:
    return configured(context(app).settings)


def feed() -> Feed:
    found: Feed = context().extras[FEED_KEY]
    return found


async def snapshot(app: Quart, principal: Principal) -> dict[str, Any]:
    """Everything the overview shows to ``principal`` at once."""
    cfg = config(app)
    runs = await overview.recent_runs(app, principal)
    found_alerts = await alert_rules.compute(app, principal, cfg)
    approvals = await overview.pending_approvals(app, principal)
    health = await overview.health(app)
    now = now_ms()
    return {
        "health": health,
        "runs_by_state": await overview.runs_by_state(app, principal),
        "recent_runs": [
            {
                "id": r.id,
                "pipeline_id": r.pipeline_id,
                "status": r.status,
                "created_ms": r.created_ms,
                "updated_ms": r.updated_ms,
            }
            for r in runs
        ],
        "approvals": approvals,
        "alerts": found_alerts,
        "timeline": await overview.timeline(app, principal, now - 3600_000, now, 30),
    }


@bp.get("/dashboard/health")
@validate_response(HealthResponse)
async def health() -> HealthResponse:
    """Gateway health for the dashboard: state, version, uptime, plugins and which data
    sources are on; the caller's runs by state, pending approvals and active alerts."""
    principal = current_principal()
    cfg = config()
    base = await overview.health(current_app)
    has_runs = overview.pipelines(current_app) is not None
    approvals = await overview.pending_approvals(current_app, principal)
    found = await alert_rules.compute(current_app, principal, cfg)
    return HealthResponse(
        **base,
        runs_by_state=await overview.runs_by_state(current_app, principal) if has_runs else None,
        approvals_pending=len(approvals) if has_runs else None,
        alerts_active=sum(1 for a in found if not a["acknowledged"]),
    )


@bp.get("/dashboard/widgets")
@validate_response(WidgetList)
async def widgets() -> WidgetList:
    """The widgets plugins registered (``gateway_register_dashboard_widgets``), with what
    each shows the caller; a widget that fails is listed with its ``error``."""
    principal = current_principal()
    registry = context().registry("dashboard_widgets")
    shown: list[WidgetView] = []
    for name, widget in sorted(registry.items.items()):
        plugin = registry.owners[name]
        title = str(getattr(widget, "title", name))
        try:
            data = await widget.data(principal)
        except GatewayError as exc:
            shown.append(WidgetView(name=name, plugin=plugin, title=title, error=exc.message))
            continue
        except Exception as exc:  # a plugin's bug must not take the dashboard down
            current_app.logger.exception("dashboard widget %r failed", name)
            shown.append(
                WidgetView(name=name, plugin=plugin, title=title, error=type(exc).__name__)
            )
            continue
        if data is not None:
            shown.append(WidgetView(name=name, plugin=plugin, title=title, data=data))
    return WidgetList(widgets=shown)


@bp.get("/dashboard/queue-timeline")
@validate_querystring(TimelineQuery)
@validate_response(TimelineResponse)
async def queue_timeline(query_args: TimelineQuery) -> TimelineResponse:
    """Runs queued, started, completed, failed and running per time bucket over the last
    ``window_seconds`` (default 3600) in ``buckets`` buckets (default 30)."""
    if overview.pipelines(current_app) is None:
        raise GatewayError(
            404, "feature_disabled", "the queue timeline needs the pipelines plugin, which is off"
        )
    now = now_ms()
    start = now - query_args.window_seconds * 1000
    found = await overview.timeline(
        current_app, current_principal(), start, now, query_args.buckets
    )
    return TimelineResponse(**found)


@bp.get("/dashboard/alerts")
@validate_response(AlertList)
async def list_alerts() -> AlertList:
    """Alerts computed from the current state (most severe first), each with its code,
    severity, since, a link to its cause and whether it was acknowledged."""
    principal = current_principal()
    found = await alert_rules.compute(current_app, principal, config())
    return AlertList.model_validate({"alerts": found})


async def _audit(
    principal: Principal, action: str, target: str, outcome: str, code: str | None
) -> None:
    """The action's event; its ``audit`` object becomes an audit record (source
    ``plugin``) when the audit plugin is on, besides its record of the request."""
    await context().hub.publish(
        STREAM,
        "dashboard.action",
        {
            "by": principal.name,
            "principal": principal.key,
            "audit": {
                "action": f"dashboard.{action}",
                "target": target,
                "outcome": outcome,
                "reason_code": code,
            },
        },
    )


@bp.post("/dashboard/actions")
@validate_request(ActionRequest)
@validate_response(ActionResponse)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
async def actions(data: ActionRequest) -> ActionResponse:
    """``pause`` / ``resume`` the gateway (``allow_gateway_control``, 409 if it already
    is), ``refresh`` every open dashboard, or ``ack`` an active alert (``alert_id``;
    ``allow_dashboard_act``; 404 if it is not active). Every action, done or refused, is
    an event ``dashboard.action`` with an ``audit`` record."""
    principal = current_principal()
    ctx = context()
    target = (data.alert_id or "") if data.action == "ack" else "gateway"
    try:
        result = await _act(ctx, principal, data)
    except GatewayError as exc:
        outcome = "denied" if exc.status in (401, 403) else "failed"
        await _audit(principal, data.action, target, outcome, exc.code)
        raise
    await _audit(principal, data.action, target, "success", None)
    return result


async def _act(ctx: Any, principal: Principal, data: ActionRequest) -> ActionResponse:
    if data.action in ("pause", "resume"):
        ctx.auth.require_gate(principal, GATE_CONTROL, f"{data.action} from the dashboard")
        if data.action == "pause":
            record = await ctx.lifecycle.pause(principal.name)
        else:
            record = await ctx.lifecycle.resume(principal.name)
        await ctx.hub.publish("gateway", f"gateway.{data.action}d", record)
        state = "paused" if record["paused"] else "running"
        return ActionResponse(action=data.action, outcome="done", state=state)
    if data.action == "refresh":
        await feed().push("refresh", "dashboard.refresh")  # at once, not coalesced
        return ActionResponse(action="refresh", outcome="done")
    ctx.auth.require_gate(principal, GATE_ACT, "acknowledging an alert")
    if not data.alert_id:
        raise GatewayError(
            400, "invalid_request_body", "alert_id: required to acknowledge", param="alert_id"
        )
    found = await alert_rules.compute(current_app, principal, config())
    alert = await alert_rules.acknowledge(current_app, principal, found, data.alert_id, data.note)
    return ActionResponse.model_validate({"action": "ack", "outcome": "done", "alert": alert})


def _sse(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@bp.get("/dashboard/stream")
@document_response(AlertList, 200)
@document_stream
async def stream() -> Response:
    """Server-sent events of changes: a ``snapshot`` (the whole overview for the caller)
    first, then ``change`` notices (``topic``: runs, approvals, gateway, alerts, audit,
    refresh) as they happen. With ``Last-Event-ID`` it resumes after that notice; a
    client further behind than the kept notices gets a fresh ``snapshot``. With
    ``Accept: application/json`` or ``?format=json`` (as on every stream of the gateway)
    the snapshot alone, as a JSON object."""
    principal = current_principal()
    ctx = context()
    accept = request.headers.get("Accept", "")
    as_json = "application/json" in accept and "text/event-stream" not in accept
    if as_json or request.args.get("format") == "json":
        # A client that cannot read a stream gets the snapshot once, as JSON.
        page = {"seq": await feed().head(), **await snapshot(current_app, principal)}
        return Response(json.dumps(page), content_type="application/json")
    if ctx.hub.draining:
        raise GatewayError(503, "draining", "the gateway is shutting down")
    raw = request.headers.get("Last-Event-ID") or request.args.get("after")
    last: int | None = None
    if raw is not None:
        try:
            last = int(raw)
        except ValueError:
            raise GatewayError(
                400, "invalid_parameter", "Last-Event-ID must be an integer"
            ) from None
        if last < 0:
            raise GatewayError(400, "invalid_parameter", "Last-Event-ID must be >= 0")
    the_feed = feed()
    app: Quart = current_app._get_current_object()  # type: ignore[attr-defined]

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        if last is not None and await the_feed.kept_after(last):
            position = last  # the notices since are replayed from the store
        else:
            position = await the_feed.head()
            yield _sse("snapshot", await snapshot(app, principal), position)
        async with contextlib.aclosing(the_feed.follow(position)) as notices:
            async for event in notices:
                if event is None:
                    yield b": heartbeat\n\n"
                else:
                    yield _sse("change", notice_of(event), event.seq)
        yield _sse("stream.closing", {"type": "stream.closing", "reason": "gateway shutting down"})

    return live_response(body(), "text/event-stream")
