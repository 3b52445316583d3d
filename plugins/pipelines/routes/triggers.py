"""``/triggers``: the manual, schedule and webhook triggers, firing one by hand, and the
(public, signed) webhook deliveries; the signature is checked by ``webhooks.py``."""

from __future__ import annotations

from typing import Any

from quart import request
from quart_schema import document_request, document_response, validate_response

from host.api import (
    ErrorResponse,
    GatewayError,
    InvalidJSON,
    context,
    current_principal,
    parse_json,
    public,
    raw_body,
    requires_gate,
)
from plugins.pipelines import webhooks
from plugins.pipelines.gates import GATE_RUN
from plugins.pipelines.models import FireRequest, FireResponse, TriggerList, WebhookPayload
from plugins.pipelines.routes.common import body_of, bp, idempotency_key, pipelines_api
from plugins.pipelines.safety_scan import scan_payload


@bp.get("/triggers")
@validate_response(TriggerList)
async def list_triggers() -> TriggerList:
    """Triggers: one manual trigger per pipeline (``manual:<pipeline>``), one per
    schedule the caller can see (``schedule:<id>``) and one per configured webhook."""
    return await pipelines_api().list_triggers(current_principal())


@bp.post("/triggers/<trigger_id>/fire")
@requires_gate(GATE_RUN)
@document_request(FireRequest)
@validate_response(FireResponse, 202)
@document_response(ErrorResponse, 422)
@document_response(ErrorResponse, 503)
async def fire_trigger(trigger_id: str) -> Any:
    """Fire a trigger now: ``manual:<pipeline>`` starts a run with the body's ``input``
    (a repeated ``Idempotency-Key`` with the same input returns the first run, outcome
    ``duplicate``, as on ``/start``); ``schedule:<id>`` fires the schedule once (its
    overlap policy applies). The input is safety-scanned (stage ``inbound``): redacted,
    or 400 ``content_blocked``. 404 unknown trigger; 503 while the gateway is paused."""
    body = await body_of(FireRequest)
    key = idempotency_key()
    info = {"surface": "trigger", "trigger": trigger_id, "principal": current_principal().name}
    payload = await scan_payload(context(), body.input, info)
    return await pipelines_api().fire(trigger_id, payload, current_principal(), key), 202


@bp.post("/triggers/<trigger_id>/webhook")
@public
@raw_body
@document_request(WebhookPayload)
@validate_response(FireResponse, 202)
@document_response(ErrorResponse, 503)
async def webhook(trigger_id: str) -> Any:
    """Webhook trigger (public), signed: ``X-Gateway-Signature: sha256=<hex>`` is the
    HMAC-SHA256, keyed with the webhook's secret, of ``<timestamp>.<delivery>.<raw body>``
    (``X-Gateway-Timestamp``, unix seconds within ``tolerance_seconds`` of now, default
    300; ``X-Gateway-Delivery``, the delivery id). The JSON body is the run input; a
    repeated delivery id returns the first run (``duplicate_delivery``). The body is
    safety-scanned (stage ``inbound``): redacted, or 400 ``content_blocked``. 400 a missing or
    malformed timestamp or delivery id; 401 a bad signature or a timestamp out of
    tolerance (nothing started); 404 unknown webhook; 503 while paused."""
    api = pipelines_api()
    found = api.webhook(trigger_id)
    data = await request.get_data(as_text=False)
    raw = data if isinstance(data, bytes) else data.encode()
    table, secret = found or ({}, None)
    if found is None or secret is None:
        raise GatewayError(404, "trigger_not_found", f"no webhook trigger {trigger_id!r}")
    delivery = webhooks.verify(table, secret, request.headers, raw)
    missing = GatewayError(404, "trigger_not_found", f"no trigger {trigger_id!r}")
    pipeline = api.require_pipeline(str(table.get("pipeline", "")), missing)
    try:
        body = parse_json(raw) if raw.strip() else {}
    except InvalidJSON as exc:
        raise GatewayError(
            400, "invalid_json", f"the webhook body is not valid JSON: {exc}"
        ) from None
    body = await scan_payload(context(), body, {"surface": "webhook", "trigger": trigger_id})
    return await api.deliver(trigger_id, pipeline, delivery, body), 202
