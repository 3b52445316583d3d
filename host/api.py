"""What plugin authors import: ``from host.api import hookimpl, public, requires_gate, ...``."""

from __future__ import annotations

from quart import g

from host.auth.decorators import public, raw_body, requires_gate
from host.auth.ownership import can_act, can_read, owned_by, owner_key, require_owner
from host.auth.principal import Principal
from host.context import GatewayContext, context
from host.errors import GatewayError, error_response
from host.events import EventHub, live_response, stream_response, stream_slot
from host.hookspecs import hookimpl
from host.openapi import document_media_type, document_stream
from host.storage import Event, Migration, Store
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
    "Event",
    "EventHub",
    "FrameError",
    "GatewayContext",
    "GatewayError",
    "InvalidJSON",
    "Migration",
    "Principal",
    "Store",
    "StreamSlot",
    "WsContext",
    "can_act",
    "can_read",
    "context",
    "current_principal",
    "document_media_type",
    "document_stream",
    "error_response",
    "hookimpl",
    "live_response",
    "owned_by",
    "owner_key",
    "parse_json",
    "public",
    "raw_body",
    "require_owner",
    "requires_gate",
    "stream_response",
    "stream_slot",
    "with_ticks",
]
