"""The ``webhook`` channel: posts session messages, signed, to a configured URL, and
accepts signed inbound messages (``POST /gateway/channels/webhook/inbound``).

Both directions sign the same way: ``X-Gateway-Signature: sha256=<hex>`` is the
HMAC-SHA256, keyed with ``[plugins.channels.webhook] secret``, of
``<timestamp>.<delivery>.<raw body>``; ``X-Gateway-Timestamp`` is unix seconds within
``tolerance_seconds`` of now, ``X-Gateway-Delivery`` a delivery id accepted once."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from typing import Any, Protocol

import httpx

from host.api import GatewayContext, GatewayError, scan_text
from plugins.channels import store
from plugins.channels.config import WebhookConfig, webhook_config
from plugins.channels.contract import ChannelState

SIGNATURE = "X-Gateway-Signature"
DELIVERY = "X-Gateway-Delivery"
TIMESTAMP = "X-Gateway-Timestamp"
_DELIVERY_ID = re.compile(r"^[!-\-/-~]{1,200}$")  # visible ASCII but "."
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class Headers(Protocol):
    """A request's headers (case-insensitive names)."""

    def get(self, key: str, default: str) -> str: ...


def signature(secret: str, timestamp: str, delivery: str, body: bytes) -> str:
    signed = f"{timestamp}.{delivery}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    stamp, delivery = str(int(time.time())), uuid.uuid4().hex
    return {
        SIGNATURE: signature(secret, stamp, delivery, body),
        TIMESTAMP: stamp,
        DELIVERY: delivery,
        "Content-Type": "application/json",
    }


def _header(headers: Headers, name: str, pattern: re.Pattern[str], what: str) -> str:
    value = headers.get(name, "").strip()
    if not pattern.match(value):
        raise GatewayError(400, "invalid_webhook_header", f"{name} is required: {what}")
    return value


def verify(config: WebhookConfig, headers: Headers, body: bytes) -> str:
    """The delivery id of a correctly signed, fresh inbound message. 400
    ``invalid_webhook_header``; 401 ``invalid_signature`` or ``stale_timestamp``."""
    if not config.secret:
        raise GatewayError(404, "channel_not_configured", "the webhook channel has no secret")
    timestamp = _header(headers, TIMESTAMP, _TIMESTAMP, "unix seconds (digits)")
    delivery = _header(
        headers, DELIVERY, _DELIVERY_ID, "1 to 200 visible ASCII characters other than '.'"
    )
    expected = signature(config.secret, timestamp, delivery, body)
    if not hmac.compare_digest(headers.get(SIGNATURE, "").encode(), expected.encode()):
        raise GatewayError(
            401, "invalid_signature", f"{SIGNATURE} does not match the timestamp, delivery and body"
        )
    if abs(time.time() - int(timestamp)) > config.tolerance_seconds:
        raise GatewayError(
            401,
            "stale_timestamp",
            f"{TIMESTAMP} is more than {config.tolerance_seconds:g} s from the gateway's clock",
        )
    return delivery


async def outbound(gateway: GatewayContext, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as it may leave the gateway (safety stage ``outbound_http``): redacted
    when the policy redacts; 422 ``outbound_blocked`` when it blocks, and nothing is sent."""
    text = json.dumps(payload, separators=(",", ":"))
    context = {"stage": "outbound_http", "channel": "webhook"}
    scan = await scan_text(gateway, text, "output", context)
    if not scan.blocked and scan.text == text:
        return payload
    try:
        redacted: dict[str, Any] = json.loads(scan.text)
    except ValueError:  # a redaction that broke the JSON: refuse rather than send it
        redacted = {}
    if scan.blocked or not redacted:
        reasons = "; ".join(str(f.get("reason") or f.get("rule_id") or "") for f in scan.findings)
        raise GatewayError(
            422,
            "outbound_blocked",
            "the webhook post was blocked by the gateway's safety policy (stage "
            f"outbound_http: {reasons or 'no reason given'}); nothing was sent",
        )
    return redacted


class WebhookChannel:
    actions = frozenset({"status", "probe", "start", "stop"})

    async def _post(self, config: WebhookConfig, payload: dict[str, Any]) -> dict[str, Any]:
        if not config.url or not config.secret:
            raise GatewayError(
                409,
                "channel_not_configured",
                "set [plugins.channels.webhook] url and secret first",
            )
        body = json.dumps(payload, separators=(",", ":")).encode()
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(
                timeout=config.timeout_seconds, follow_redirects=False, trust_env=False
            ) as client:
                response = await client.post(
                    config.url, content=body, headers=signed_headers(config.secret, body)
                )
        except httpx.HTTPError as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        ms = round((time.perf_counter() - started) * 1000, 2)
        return {"ok": response.is_success, "status": response.status_code, "ms": ms}

    async def act(
        self, gateway: GatewayContext, action: str, state: ChannelState
    ) -> tuple[ChannelState, dict[str, Any]]:
        config = webhook_config(gateway.settings)
        configured = bool(config.url and config.secret)
        if action == "status":
            return state, {"configured": configured, "accepts_inbound": bool(config.secret)}
        if action == "probe":
            result = await self._post(config, {"type": "probe"})
            return state.but(detail={**state.detail, "last_probe": result}), result
        if action == "start":
            if not configured:
                raise GatewayError(
                    409, "channel_not_configured", "set [plugins.channels.webhook] url and secret"
                )
            return state.but(running=True), {"ok": True}
        return state.but(running=False), {"ok": True}  # stop

    async def send(
        self, gateway: GatewayContext, session_key: str, message: dict[str, Any]
    ) -> dict[str, Any]:
        config = webhook_config(gateway.settings)
        payload = await outbound(
            gateway, {"type": "message", "session_key": session_key, "message": message}
        )
        result = await self._post(config, payload)
        await store.record_message(
            gateway.store,
            channel="webhook",
            direction="out",
            session_key=session_key,
            delivery=None,
            status="delivered" if result.get("ok") else "failed",
            body=payload,
        )
        return {"delivered": bool(result.get("ok")), **result}
