"""``POST /gateway/channels/{channel}/lifecycle`` and the webhook channel's signed
inbound route ``POST /gateway/channels/webhook/inbound`` (public: the signature is the
credential)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Blueprint, request
from quart_schema import document_request, document_response, validate_request, validate_response

from host.api import (
    ErrorResponse,
    GatewayContext,
    GatewayError,
    InvalidJSON,
    Principal,
    context,
    current_principal,
    now_ms,
    parse_json,
    public,
    raw_body,
    requires_gate,
    validation_message,
)
from plugins.channels import store, webhook
from plugins.channels.config import webhook_config
from plugins.channels.contract import Channel, LifecycleOutcome

bp = Blueprint("channels", __name__)
GATE = "allow_channels_control"
EVENTS = "channels"


class LifecycleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["status", "probe", "login", "logout", "start", "stop"]
    policy_gate: str | None = None


class StateRecord(BaseModel):
    running: bool
    logged_in: bool
    detail: dict[str, Any]
    updated_ms: int | None
    updated_by: str | None


class LifecycleResponse(BaseModel):
    channel: str
    action: str
    changed: bool = Field(description="whether the stored state changed")
    state: StateRecord
    result: dict[str, Any]


class InboundMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_key: str = Field(min_length=1, max_length=200)
    text: str = Field(max_length=100_000)
    metadata: dict[str, Any] | None = None


class InboundAccepted(BaseModel):
    accepted: bool
    outcome: Literal["accepted", "duplicate_delivery"]
    delivery: str


def channel_of(ctx: GatewayContext, name: str) -> Channel:
    found: Channel | None = ctx.registry("channels").get(name)
    if found is None:
        raise GatewayError(404, "channel_not_found", f"no channel {name!r}")
    return found


@bp.post("/gateway/channels/<channel>/lifecycle")
@requires_gate(GATE)
@validate_request(LifecycleRequest)
@validate_response(LifecycleResponse)
@document_response(ErrorResponse, 404)
@document_response(ErrorResponse, 409)
async def lifecycle(channel: str, data: LifecycleRequest) -> LifecycleResponse:
    """Drive a channel: ``status``, ``probe``, ``login``, ``logout``, ``start``, ``stop``.
    404 ``channel_not_found``; 409 ``action_not_supported`` for an action the channel
    does not have (and the channel's own refusals, such as ``channel_not_configured``).
    Every action but ``status`` is stored before the answer and published on the
    ``channels`` stream (audited)."""
    out = await act(context(), current_principal(), channel, data.action)
    after = out.state
    return LifecycleResponse(
        channel=channel,
        action=out.action,
        changed=out.changed,
        state=StateRecord(
            running=after.running,
            logged_in=after.logged_in,
            detail=after.detail,
            updated_ms=after.updated_ms,
            updated_by=after.updated_by,
        ),
        result=out.result,
    )


async def act(
    ctx: GatewayContext, principal: Principal, channel: str, action: str
) -> LifecycleOutcome:
    """The lifecycle action (the route's, and the ``ChannelsAPI`` service's)."""
    ctx.auth.require_gate(principal, GATE, f"the channel action {action!r}")
    target = channel_of(ctx, channel)
    if action not in target.actions:
        raise GatewayError(
            409,
            "action_not_supported",
            f"channel {channel!r} does not support {action!r} "
            f"(it supports {', '.join(sorted(target.actions))})",
        )
    before = await store.load(ctx.store, channel)
    after, result = await target.act(ctx, action, before)
    changed = (after.running, after.logged_in, after.detail) != (
        before.running,
        before.logged_in,
        before.detail,
    )
    if action != "status":
        after = after.but(updated_ms=now_ms(), updated_by=principal.name)
        await store.save(ctx.store, channel, after)
        audit = {
            "action": f"channel.{action}",
            "target": channel,
            "outcome": "succeeded" if result.get("ok", True) else "failed",
            "reason_code": None,
        }
        await ctx.hub.publish(
            EVENTS,
            f"channel.{action}",
            {
                "channel": channel,
                "by": principal.name,
                "running": after.running,
                "logged_in": after.logged_in,
                "result": result,
                "audit": audit,
            },
        )
    return LifecycleOutcome(channel, action, changed, after, result)


@bp.post("/gateway/channels/webhook/inbound")
@public
@raw_body
@document_request(InboundMessage)
@validate_response(InboundAccepted, 202)
@document_response(ErrorResponse, 409)
async def webhook_inbound() -> tuple[InboundAccepted, int]:
    """A signed message from the outside to a session (public: the HMAC signature is the
    credential; see ``X-Gateway-Signature``, ``X-Gateway-Timestamp`` within
    ``tolerance_seconds``, ``X-Gateway-Delivery`` accepted once). Stored and published on
    the ``channel:webhook`` stream; 202. A repeated delivery id is 200
    ``duplicate_delivery`` and stores nothing. 400 a missing header or a bad body naming
    the field; 401 ``invalid_signature`` or ``stale_timestamp``; 404 when no secret is
    configured; 409 ``channel_stopped``."""
    ctx = context()
    if "webhook" not in ctx.registry("channels"):
        raise GatewayError(404, "channel_not_found", "no channel 'webhook'")
    data = await request.get_data(as_text=False)
    raw = data if isinstance(data, bytes) else data.encode()
    delivery = webhook.verify(webhook_config(ctx.settings), request.headers, raw)
    try:
        message = InboundMessage.model_validate(parse_json(raw) if raw.strip() else {})
    except InvalidJSON as exc:
        raise GatewayError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        text, param = validation_message(exc)
        raise GatewayError(400, "invalid_request_body", text, param=param) from None
    if not (await store.load(ctx.store, "webhook")).running:
        raise GatewayError(409, "channel_stopped", "the webhook channel is stopped")
    if not await ctx.store.once("channels.webhook", delivery):
        return InboundAccepted(accepted=False, outcome="duplicate_delivery", delivery=delivery), 200
    body = message.model_dump()
    await store.record_message(
        ctx.store,
        channel="webhook",
        direction="in",
        session_key=message.session_key,
        delivery=delivery,
        status="received",
        body=body,
    )
    await ctx.hub.publish("channel:webhook", "channel.message", {"delivery": delivery, **body})
    return InboundAccepted(accepted=True, outcome="accepted", delivery=delivery), 202
