"""What plugin authors import: ``from host.api import hookimpl, public, requires_gate, ...``."""

from __future__ import annotations

from quart import g

from host.auth.decorators import public, raw_body, requires_gate
from host.auth.ownership import can_act, can_read, owned_by, owner_key, require_owner
from host.auth.principal import Principal
from host.context import GatewayContext, context
from host.errors import (
    ErrorDetail,
    ErrorResponse,
    GatewayError,
    error_body,
    error_response,
    validation_message,
)
from host.event_models import EventPage, EventRecord
from host.events import EventHub, live_response, stream_response, stream_slot
from host.hookspecs import Register, hookimpl
from host.openapi import document_media_type, document_stream
from host.plugins import PluginError, Registry
from host.safety import Action, Scanner, ScanResult, Verdict, publish_findings, scan_text
from host.secrets import MASK, Secret, SecretError
from host.settings import Settings
from host.storage import Event, Migration, Store, now_ms
from host.stream_slots import StreamSlot
from host.strict_json import InvalidJSON, parse_json
from host.ticks import with_ticks
from host.ws import FrameError, WsContext


def current_principal() -> Principal:
    """The authenticated caller of the current (non-public) request."""
    principal: Principal | None = g.get("principal")
    if principal is None:
        raise GatewayError(401, "unauthorized", "this request is not authenticated")
    return principal


__all__ = [
    "MASK",
    "Action",
    "ErrorDetail",
    "ErrorResponse",
    "Event",
    "EventHub",
    "EventPage",
    "EventRecord",
    "FrameError",
    "GatewayContext",
    "GatewayError",
    "InvalidJSON",
    "Migration",
    "PluginError",
    "Principal",
    "Register",
    "Registry",
    "ScanResult",
    "Scanner",
    "Secret",
    "SecretError",
    "Settings",
    "Store",
    "StreamSlot",
    "Verdict",
    "WsContext",
    "can_act",
    "can_read",
    "context",
    "current_principal",
    "document_media_type",
    "document_stream",
    "error_body",
    "error_response",
    "hookimpl",
    "live_response",
    "now_ms",
    "owned_by",
    "owner_key",
    "parse_json",
    "public",
    "publish_findings",
    "raw_body",
    "require_owner",
    "requires_gate",
    "scan_text",
    "stream_response",
    "stream_slot",
    "validation_message",
    "with_ticks",
]
