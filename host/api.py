"""What plugin authors import: ``from host.api import hookimpl, public, requires_gate, ...``.

The only host module a plugin imports (built-in or third-party: a test walks the imports
of ``plugins/`` and ``examples/``); everything else in ``host`` may change. Listed with
what each name is in ``docs/reference/plugins.md``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from quart import Quart, g, has_request_context, request

from host.auth.allowlist import AllowList, allow_list_problems, allow_lists
from host.auth.decorators import public, raw_body, requires_gate
from host.auth.ownership import can_act, can_read, owned_by, owner_key, require_owner
from host.auth.principal import Principal
from host.auth.watch import credential_watch
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
from host.hookspecs import Register, hookimpl, hookspec, registry_hookspec
from host.openapi import document_media_type, document_stream
from host.operator import (
    GATEWAY_VERSION,
    bearer_token,
    config_sources,
    masked_config,
    new_session_token,
    patch_config,
    reload_config,
    serve_gateway_socket,
    token_hash,
    ws_capabilities,
)
from host.plugins import PluginError, Registry
from host.request_body import json_body
from host.safety import (
    STAGES,
    Action,
    Scanner,
    ScanResult,
    Verdict,
    publish_findings,
    scan_text,
    stream_holdback,
)
from host.secrets import MASK, Secret, SecretError
from host.services import ServiceUnavailable
from host.settings import Settings, build_settings, load_settings
from host.storage import Event, Migration, Store, now_ms
from host.stream_slots import StreamSlot
from host.strict_json import InvalidJSON, parse_json
from host.ticks import with_ticks
from host.tools import (
    Tool,
    ToolCall,
    ToolError,
    ToolInfo,
    args_digest,
    call_tool,
    describe_tools,
    replace_tools,
)
from host.ws import FrameError, WsContext


def current_principal() -> Principal:
    """The authenticated caller of the current (non-public) request."""
    principal: Principal | None = g.get("principal")
    if principal is None:
        raise GatewayError(401, "unauthorized", "this request is not authenticated")
    return principal


def request_actor() -> Principal | None:
    """The principal the current request authenticated as, also when a rate limit or a
    policy gate then refused it (for audit); ``None`` on a public route, when
    authentication failed, and outside a request."""
    if not has_request_context():
        return None
    principal: Principal | None = g.get("principal")
    if principal is None:
        principal = getattr(request._get_current_object(), "gw_principal", None)  # type: ignore[attr-defined]
    return principal


T = TypeVar("T")


def provide(kind: type[T], impl: T, *, app: Quart | None = None) -> None:
    """Offer ``impl`` to other plugins as the ``kind`` service (a type of the plugin's
    contract module); call it from a hook (``gateway_startup``), which names the provider."""
    context(app).services.provide(kind, impl)


def withdraw(kind: type[Any], *, app: Quart | None = None) -> None:
    """Stop offering the ``kind`` service (``gateway_shutdown``)."""
    context(app).services.withdraw(kind)


def service(kind: type[T], *, app: Quart | None = None) -> T:
    """The ``kind`` service another plugin provides; :class:`ServiceUnavailable` (503
    ``service_unavailable``, naming the providing plugin) when it is not there."""
    return context(app).services.get(kind)


def has_service(kind: type[Any], *, app: Quart | None = None) -> bool:
    """Whether the ``kind`` service is provided now."""
    return context(app).services.has(kind)


__all__ = [
    "GATEWAY_VERSION",
    "MASK",
    "STAGES",
    "Action",
    "AllowList",
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
    "ServiceUnavailable",
    "Settings",
    "Store",
    "StreamSlot",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolInfo",
    "Verdict",
    "WsContext",
    "allow_list_problems",
    "allow_lists",
    "args_digest",
    "bearer_token",
    "build_settings",
    "call_tool",
    "can_act",
    "can_read",
    "config_sources",
    "context",
    "credential_watch",
    "current_principal",
    "describe_tools",
    "document_media_type",
    "document_stream",
    "error_body",
    "error_response",
    "has_service",
    "hookimpl",
    "hookspec",
    "json_body",
    "live_response",
    "load_settings",
    "masked_config",
    "new_session_token",
    "now_ms",
    "owned_by",
    "owner_key",
    "parse_json",
    "patch_config",
    "provide",
    "public",
    "publish_findings",
    "raw_body",
    "registry_hookspec",
    "reload_config",
    "replace_tools",
    "request_actor",
    "require_owner",
    "requires_gate",
    "scan_text",
    "serve_gateway_socket",
    "service",
    "stream_holdback",
    "stream_response",
    "stream_slot",
    "token_hash",
    "validation_message",
    "with_ticks",
    "withdraw",
    "ws_capabilities",
]
