"""Built-in dashboard plugin: the dashboard data APIs, the live ``/dashboard``,
``/webchat`` and the ``/ops`` console, signed in with a cookie (``/ops/login``) and
protected by CSRF tokens and a strict Content-Security-Policy. Hooks only; the data APIs
in ``api_routes.py``, the pages in ``pages.py``, signing in in ``websession.py``. Written
against ``host.api`` and the other plugins' contract modules alone, as a third party
would."""

from __future__ import annotations

from typing import Any

from quart import Quart

from host.api import Event, GatewayError, Register, Settings, Store, context, hookimpl
from plugins.dashboard import (
    api_routes,
    hookspecs,
    ops_forms,  # noqa: F401 - adds its routes to pages.bp
    ops_panels,  # noqa: F401 - adds its pages to pages.bp
    ops_sessions,  # noqa: F401 - adds its pages to pages.bp
    ops_usage,  # noqa: F401 - adds its pages to pages.bp
    pages,
    tables,
    websession,
)
from plugins.dashboard.alerts import SIGNALS_KEY
from plugins.dashboard.config import configured, problems
from plugins.dashboard.feed import NOTICES, Feed, topic_of
from plugins.dashboard.gates import GATE_ACT
from plugins.dashboard.signals import Signals

_UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


@hookimpl
def gateway_register_hookspecs(register: Register) -> None:
    register(hookspecs)  # widgets: plugins/dashboard/hookspecs.py


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(api_routes.bp)
    register(pages.bp)  # with the sessions and memory pages of ``ops_sessions``


@hookimpl
def gateway_register_policy_gates(register: Register) -> None:
    register(GATE_ACT, "acknowledge dashboard alerts")


@hookimpl
def gateway_register_migrations(register: Register) -> None:
    for migration in tables.MIGRATIONS:
        register(migration)


@hookimpl
async def gateway_startup(app: Quart) -> None:
    ctx = context(app)
    config = configured(ctx.settings)  # an invalid section fails start-up, naming the key
    feed = ctx.extras[api_routes.FEED_KEY] = Feed(ctx, config.stream_buffer)
    feed.start()
    signals = ctx.extras[SIGNALS_KEY] = Signals(ctx)
    signals.start()


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    feed: Feed | None = context(app).extras.pop(api_routes.FEED_KEY, None)
    if feed is not None:
        await feed.stop()
    signals: Signals | None = context(app).extras.pop(SIGNALS_KEY, None)
    if signals is not None:
        await signals.stop()


@hookimpl
async def gateway_prune(
    store: Store, settings: Settings, now_ms: int, dry_run: bool
) -> dict[str, int]:
    # The notices are only for resuming a stream: the last stream_buffer of them do.
    keep = configured(settings).stream_buffer
    removed = await store.prune_stream(
        NOTICES, before_ms=None, keep_last=keep, batch_size=1000, dry_run=dry_run
    )
    return {"events": removed}


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)


@hookimpl
async def gateway_on_event(event: Event, app: Quart) -> None:
    if event.type == "safety.block":
        signals: Signals | None = context(app).extras.get(SIGNALS_KEY)
        if signals is not None:
            signals.blocked(event.ts_ms)
    topic = topic_of(event)
    if topic is None:
        return
    found: Feed | None = context(app).extras.get(api_routes.FEED_KEY)
    if found is not None:
        found.mark(topic, event.type)


@hookimpl
async def gateway_actor_from_request(request: Any, settings: Settings) -> Any:
    """The pages' cookie signs in the APIs they call (fetch and EventSource send it, and
    SameSite=Strict keeps it to this site's pages). A bearer token, when sent, wins; a
    WebSocket upgrade is never signed in by the cookie; a state-changing request needs
    the CSRF token in ``X-CSRF-Token`` (403 without, nothing done)."""
    if request.headers.get("Authorization"):
        return None  # checked first: most API calls carry a token and no cookie to parse
    cookie = request.cookies.get(websession.COOKIE)
    if not cookie:
        return None
    if getattr(request, "method", None) is None or _is_websocket(request):
        return None
    from quart import current_app

    session = await websession.resolve(context(current_app), cookie)
    if session is None:
        return None
    if request.method in _UNSAFE and not websession.csrf_ok(
        session.csrf, request.headers.get(websession.CSRF_HEADER)
    ):
        raise GatewayError(
            403, "csrf_failed", "a request signed in by the ops cookie needs X-CSRF-Token"
        )
    return session.principal


def _is_websocket(request: Any) -> bool:
    return request.scheme in ("ws", "wss") or type(request).__name__ == "Websocket"
