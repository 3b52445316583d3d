"""Health, metrics, status, pause/resume/reload, config and plugin views."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, current_app, request
from quart_schema import document_request, document_response, validate_response

from host.api import (
    GatewayError,
    config_sources,
    context,
    current_principal,
    document_media_type,
    document_stream,
    masked_config,
    patch_config,
    public,
    reload_config,
    requires_gate,
    stream_response,
)
from plugins.control.models import (
    ConfigPatchRequest,
    ConfigPatchResponse,
    ConfigResponse,
    EventPage,
    HealthResponse,
    PluginsResponse,
    PrometheusText,
    ReloadResponse,
    StateResponse,
    StatusResponse,
)
from plugins.control.status import GATE_READ, status_report

GATE_CONTROL = "allow_gateway_control"
GATE_CONFIG_WRITE = "allow_config_write"
GATE_METRICS = "allow_metrics_read"  # all a Prometheus scraper's token needs
GATEWAY_STREAM = "gateway"


async def publish(type_: str, data: dict[str, Any]) -> None:
    """Record a gateway-level event (pause, reload, config change, session grant)."""
    await context().hub.publish(GATEWAY_STREAM, type_, data)


bp = Blueprint("control", __name__)


@bp.get("/health")
@public(rate_limited=False)
@validate_response(HealthResponse, 200)
@document_response(HealthResponse, 503)
async def health() -> Any:
    """Liveness probe; 503 while the gateway drains for shutdown."""
    if context().lifecycle.draining:
        return HealthResponse(status="draining"), 503
    return HealthResponse(status="ok")


@bp.get("/metrics")
@requires_gate(GATE_METRICS)
@document_response(PrometheusText, 200)
@document_media_type("text/plain")
async def metrics() -> Response:
    """Prometheus metrics in the text exposition format."""
    ctx = context()
    ctx.metrics.open_streams.set(ctx.hub.open_streams)
    return Response(generate_latest(ctx.metrics.registry), content_type=CONTENT_TYPE_LATEST)


@bp.get("/gateway/status")
@document_response(StatusResponse)
async def status() -> dict[str, Any]:
    """Gateway state, uptime, auth counters, plugins and store; without
    ``allow_gateway_read`` only ``service``, ``version`` and ``state`` (liveness)."""
    report = await status_report(current_app, current_principal())
    return StatusResponse(**report).model_dump(exclude_unset=True)


async def _state(paused_record: dict[str, Any]) -> StateResponse:
    return StateResponse(
        state="paused" if paused_record["paused"] else "running",
        paused=paused_record["paused"],
        by=paused_record.get("by"),
        at_ms=paused_record.get("at_ms"),
    )


@bp.post("/gateway/pause")
@requires_gate(GATE_CONTROL)
@validate_response(StateResponse)
async def pause() -> StateResponse:
    """Stop accepting new runs (stored; every worker and plugin sees it). 409 if paused."""
    record = await context().lifecycle.pause(current_principal().name)
    await publish("gateway.paused", record)
    return await _state(record)


@bp.post("/gateway/resume")
@requires_gate(GATE_CONTROL)
@validate_response(StateResponse)
async def resume() -> StateResponse:
    """Accept new runs again. 409 if the gateway is not paused."""
    record = await context().lifecycle.resume(current_principal().name)
    await publish("gateway.resumed", record)
    return await _state(record)


@bp.post("/gateway/reload")
@requires_gate(GATE_CONTROL)
@validate_response(ReloadResponse)
async def reload() -> ReloadResponse:
    """Re-read the config and let plugins reload; a broken config is refused (400)."""
    report = await reload_config(current_app)
    await publish("gateway.reloaded", {"by": current_principal().name, **report})
    return ReloadResponse(**report)


@bp.get("/gateway/config")
@requires_gate(GATE_READ)
@validate_response(ConfigResponse)
async def get_config() -> ConfigResponse:
    """The running configuration with secrets masked, and where it came from."""
    return ConfigResponse(
        config=masked_config(current_app), sources=config_sources(context().settings)
    )


@bp.patch("/gateway/config")
@requires_gate(GATE_CONFIG_WRITE)
@document_request(ConfigPatchRequest)
@validate_response(ConfigPatchResponse)
async def patch_config_view() -> ConfigPatchResponse:
    """Change the configuration at runtime (JSON merge patch, validated, written to the
    overrides file atomically); says which keys applied live and which need a restart.
    Only ``events.*`` is open to ``allow_config_write`` alone: any other key, and any
    ``{env}``/``{file}`` secret reference, also needs the ``"*"`` gate (403)."""
    body = await request.get_json(silent=True)
    if not request.is_json:
        raise GatewayError(415, "unsupported_media_type", "send the patch as application/json")
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_json", "the patch must be a JSON object")
    body.pop("policy_gate", None)
    if not body:
        raise GatewayError(400, "empty_patch", "the patch changes nothing")
    report = await patch_config(current_app, body, current_principal())
    await publish(
        "config.patched",
        {
            "by": current_principal().name,
            "keys": report["applied_live"] + report["restart_required"],
        },
    )
    return ConfigPatchResponse(**report)


@bp.get("/gateway/plugins")
@requires_gate(GATE_READ)
@validate_response(PluginsResponse)
async def plugins() -> PluginsResponse:
    """Which plugins loaded, from where, which hooks each implements and what it registered."""
    ctx = context()
    registrations: dict[str, dict[str, list[str]]] = {}
    for kind, registry in ctx.registries.items():
        for owner, names in registry.by_owner().items():
            registrations.setdefault(owner, {})[kind] = sorted(names)
    for owner, names in ctx.gates.by_owner().items():
        registrations.setdefault(owner, {})["policy_gates"] = sorted(names)
    for route in ctx.routes:
        registrations.setdefault(route.plugin, {}).setdefault("routes", []).append(
            f"{','.join(route.methods) or 'WS'} {route.rule}"
        )
    return PluginsResponse(
        plugins=ctx.plugins.plugin_list(),
        gates={
            name: {"description": str(ctx.gates[name]), "plugin": ctx.gates.owners[name]}
            for name in ctx.gates
        },
        registrations=registrations,
        ws_kinds=sorted(ctx.ws_kinds),
    )


@bp.get("/gateway/events")
@requires_gate(GATE_READ)
@document_response(EventPage, 200)
@document_stream
async def gateway_events() -> Response:
    """The gateway's own event stream (pause, resume, reload, config, sessions): SSE with
    ``Last-Event-ID`` resume, JSONL for ``Accept: application/x-ndjson``, or a JSON page
    with ``?after=&limit=``."""
    return await stream_response(context().hub, request, GATEWAY_STREAM)
