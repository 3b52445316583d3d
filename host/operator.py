"""What an operator plugin needs from the host, through ``host.api``: the built-in
``control`` plugin is one, and a third party can write another with the same calls.

- the configuration as operators see it (``masked_config``, ``config_sources``) and
  change it (``patch_config``, ``reload_config``: validated, written atomically, the
  plugins reloaded);
- password-session tokens (``new_session_token``, ``token_hash``, ``bearer_token``);
- the ``/gateway/ws`` frame protocol (``serve_gateway_socket``, ``ws_capabilities``),
  whose kinds plugins add through ``gateway_register_ws_kinds``.
"""

from __future__ import annotations

from typing import Any

from quart import Quart

from host import __version__
from host.auth.guard import bearer_token
from host.auth.principal import Principal
from host.auth.tokens import TOKEN_PREFIX_SESSION, new_token, token_hash
from host.config_admin import config_sources, patch_config, reload_config, secret_keys
from host.config_mask import masked_config as _masked_config
from host.context import context
from host.ws import (
    HEARTBEAT_KIND,
    PROTOCOL_VERSION,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    response_kind,
    serve_socket,
)

GATEWAY_VERSION: str = __version__


def masked_config(app: Quart) -> dict[str, Any]:
    """The running configuration with every secret the plugins declare (and every
    secret-looking key) masked, as ``GET /gateway/config`` shows it."""
    return _masked_config(context(app).settings, secret_keys(app))


def new_session_token() -> str:
    """A fresh, unguessable password-session token (store only its ``token_hash``)."""
    return new_token(TOKEN_PREFIX_SESSION)


async def serve_gateway_socket(app: Quart, ws: Any, principal: Principal) -> None:
    """Serve the ``/gateway/ws`` protocol on an authenticated WebSocket: the registered
    kinds, heartbeats, the caller's rate limit and WebSocket cap (past it the upgrade is
    refused with 429 ``too_many_websockets``), and a clean close when draining."""
    ctx = context(app)

    async def check_rate(p: Principal) -> int:
        return await ctx.auth.hit(p.key, p.rate_limit)

    # Before the accept: past the cap the upgrade is refused with 429 too_many_websockets.
    slot = ctx.lifecycle.websocket_slots.acquire(principal.key)
    ctx.metrics.ws_connections.inc()
    ctx.lifecycle.websocket_opened()
    try:
        await serve_socket(
            app,
            ws,
            principal,
            ctx.ws_kinds.items,
            ctx.settings.events.heartbeat_seconds,
            lambda: ctx.lifecycle.draining,
            check_rate,
        )
    finally:
        slot.release()
        ctx.metrics.ws_connections.dec()
        ctx.lifecycle.websocket_closed()


def ws_capabilities(app: Quart) -> dict[str, Any]:
    """What ``capabilities.request`` answers: protocol versions and every kind."""
    ctx = context(app)
    kinds = sorted(ctx.ws_kinds)
    return {
        "schema_version": SCHEMA_VERSION,
        "protocol_version": PROTOCOL_VERSION,
        "response_schema_version": SCHEMA_VERSION,
        "supported_request_schema_versions": list(SUPPORTED_SCHEMA_VERSIONS),
        "request_kinds": kinds,
        "response_kinds": sorted({response_kind(k) for k in kinds} | {"error", HEARTBEAT_KIND}),
        "contracts": {
            "heartbeat": {
                "kind": HEARTBEAT_KIND,
                "interval_seconds": ctx.settings.events.heartbeat_seconds,
            }
        },
    }


__all__ = [
    "GATEWAY_VERSION",
    "bearer_token",
    "config_sources",
    "masked_config",
    "new_session_token",
    "patch_config",
    "reload_config",
    "serve_gateway_socket",
    "token_hash",
    "ws_capabilities",
]
