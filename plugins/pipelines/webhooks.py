"""Webhook triggers: their configuration (``[plugins.pipelines.webhooks.<name>]`` tables:
``pipeline``, ``secret`` and ``tolerance_seconds``, checked by ``config.py``) and the
verification of a delivery.

A delivery is signed: ``X-Gateway-Signature: sha256=<hex>`` is the HMAC-SHA256, keyed
with the webhook's secret, of ``<timestamp>.<delivery>.<raw body>``, where
``X-Gateway-Timestamp`` is unix seconds within ``tolerance_seconds`` of now and
``X-Gateway-Delivery`` the delivery id (a repeated one returns the first run)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any, Protocol

from host.api import GatewayError, Secret, SecretError, Settings
from plugins.pipelines.config import webhook_tolerance

SIGNATURE = "X-Gateway-Signature"
DELIVERY = "X-Gateway-Delivery"
TIMESTAMP = "X-Gateway-Timestamp"
_DELIVERY_ID = re.compile(r"^[!-\-/-~]{1,200}$")  # visible ASCII but "."
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


class Headers(Protocol):
    """A request's headers (case-insensitive names)."""

    def get(self, key: str, default: str) -> str: ...


def tables(settings: Settings) -> dict[str, dict[str, Any]]:
    """The configured webhooks by name."""
    raw = settings.plugin_section("pipelines").get("webhooks") or {}
    return (
        {str(k): v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}
    )


def secret_of(table: dict[str, Any], config_dir: Path | None) -> str | None:
    """The webhook's secret, or None when it does not resolve (the webhook is then 404)."""
    try:
        return Secret.resolve(table.get("secret"), config_dir).get() or None
    except (SecretError, TypeError, ValueError):
        return None


def signature(secret: str, timestamp: str, delivery: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, "<timestamp>.<delivery>.<body>")>``."""
    signed = f"{timestamp}.{delivery}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _header(headers: Headers, name: str, pattern: re.Pattern[str], what: str) -> str:
    value = headers.get(name, "").strip()
    if not pattern.match(value):
        raise GatewayError(400, "invalid_webhook_header", f"{name} is required: {what}")
    return value


def verify(table: dict[str, Any], secret: str, headers: Headers, body: bytes) -> str:
    """The delivery id of a delivery signed with ``secret``. 400
    ``invalid_webhook_header`` a missing or malformed timestamp or delivery id; 401
    ``invalid_signature``, or ``stale_timestamp`` out of the webhook's tolerance."""
    timestamp = _header(headers, TIMESTAMP, _TIMESTAMP, "unix seconds (digits)")
    delivery = _header(
        headers, DELIVERY, _DELIVERY_ID, "1 to 200 visible ASCII characters other than '.'"
    )
    sent = headers.get(SIGNATURE, "")
    expected = signature(secret, timestamp, delivery, body)
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise GatewayError(
            401,
            "invalid_signature",
            f"{SIGNATURE} does not match the timestamp, delivery id and body",
        )
    tolerance = webhook_tolerance(table)
    if abs(time.time() - int(timestamp)) > tolerance:
        raise GatewayError(
            401,
            "stale_timestamp",
            f"{TIMESTAMP} is more than {tolerance:g} seconds from the gateway's clock",
        )
    return delivery
