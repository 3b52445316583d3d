"""Built-in channels plugin: connectors between the gateway and the outside, registered
through ``gateway_register_channels`` (``hookspecs.py``; contract in ``contract.py``),
driven by ``POST /gateway/channels/{channel}/lifecycle``, their state stored. Built in:
``webchat`` (the web UI's chat) and ``webhook`` (signed messages out and in)."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import (
    FrameError,
    GatewayError,
    Principal,
    Register,
    Settings,
    Store,
    WsContext,
    context,
    hookimpl,
    provide,
    withdraw,
)
from plugins.channels import hookspecs, retention, routes, store
from plugins.channels.config import problems
from plugins.channels.contract import ACTIONS, ChannelsAPI, LifecycleOutcome
from plugins.channels.webchat import WebchatChannel
from plugins.channels.webhook import WebhookChannel


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(routes.GATE, "drive channels: status, probe, login, logout, start, stop")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in store.MIGRATIONS:
        register(migration)


@hookimpl
def gateway_register_channels(register: Register) -> None:
    register("webchat", WebchatChannel())
    register("webhook", WebhookChannel())


@hookimpl
def gateway_register_secret_keys(register: Register) -> None:
    register("plugins.channels.webhook.secret", "the HMAC key of the webhook channel")


@hookimpl
def gateway_validate_config(settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
def gateway_startup(app: Quart) -> None:
    ctx = context(app)

    async def deliver(channel: str, session_key: str, message: dict[str, Any]) -> dict[str, Any]:
        target = routes.channel_of(ctx, channel)
        if not (await store.load(ctx.store, channel)).running:
            raise GatewayError(409, "channel_stopped", f"channel {channel!r} is stopped")
        result: dict[str, Any] = await target.send(ctx, session_key, message)
        return result

    async def act(principal: Principal, channel: str, action: str) -> LifecycleOutcome:
        if action not in ACTIONS:
            raise GatewayError(400, "invalid_request_body", f"action: no action {action!r}")
        return await routes.act(ctx, principal, channel, action)

    provide(ChannelsAPI, ChannelsAPI(deliver, act, lambda: list(ctx.registry("channels"))), app=app)


@hookimpl
def gateway_shutdown(app: Quart) -> None:
    withdraw(ChannelsAPI, app=app)


async def channels_status(payload: dict[str, Any], ws: WsContext) -> dict[str, Any]:
    """``channels.status.request``: every channel's stored state and supported actions
    (``allow_channels_control``)."""
    if not ws.principal.has_gate(routes.GATE):
        raise FrameError("policy_gate_denied", f"needs the {routes.GATE} gate", ws.request_id)
    ctx = context(ws.app)
    found = {}
    for name in sorted(ctx.registry("channels")):
        state = await store.load(ctx.store, name)
        found[name] = {
            "running": state.running,
            "logged_in": state.logged_in,
            "updated_ms": state.updated_ms,
            "actions": sorted(ctx.registry("channels")[name].actions),
        }
    return {"channels": found}


@hookimpl
def gateway_register_ws_kinds(register: Register) -> None:
    register("channels.status.request", channels_status)


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    return await retention.prune(store, settings, now_ms, dry_run)
