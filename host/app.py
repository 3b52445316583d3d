"""``create_app(settings)``: build the Quart app and load every plugin into it."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from quart import Quart, Response, g, request, websocket
from quart_schema import QuartSchema
from quart_schema.openapi import Info
from werkzeug.routing.exceptions import WebsocketMismatch

from host import __version__
from host.auth.decorators import gate_of, is_public, takes_raw_body
from host.auth.guard import Authenticator
from host.auth.tokens import load_or_create_admin_token
from host.context import EXTENSION_KEY, GatewayContext, RouteInfo, context
from host.errors import GatewayError, install_error_handlers
from host.events import EventHub
from host.lifecycle import Lifecycle
from host.metrics import GatewayMetrics
from host.openapi import GatewayOpenAPIProvider
from host.origins import OriginPolicy, is_preflight
from host.plugins import PluginError, PluginHost, Registry
from host.responses import install_cached_conversion
from host.retention import Retention
from host.services import Services
from host.settings import Settings, load_settings
from host.state_dir import ensure_state_dir
from host.storage import Migration, Store
from host.url_rules import rule_class

log = logging.getLogger("gateway")

# Routes the host itself serves (not a plugin): the generated OpenAPI document.
HOST_PUBLIC_ENDPOINTS = frozenset({"openapi"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def create_app(
    settings: Settings | None = None,
    *,
    extra_plugins: Sequence[tuple[str, object]] | None = None,
    load_entrypoints: bool = True,
) -> Quart:
    """Build the gateway. ``extra_plugins`` registers plugin objects directly (tests, embedding);
    ``load_entrypoints=False`` skips installed third-party plugins."""
    settings = settings or load_settings()
    plugins = PluginHost(settings, extra_plugins=extra_plugins, load_entrypoints=load_entrypoints)

    # No static folder: Quart would otherwise serve <cwd>/static/* to anyone, unauthenticated.
    app = Quart("agent_gateway", static_folder=None)
    app.url_rule_class = rule_class()
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.config["BODY_TIMEOUT"] = settings.server.body_read_timeout_seconds
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.config["QUART_SCHEMA_CONVERT_CASING"] = False
    QuartSchema(
        app,
        openapi_path="/openapi.json",
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(title="agent-gateway", version=__version__),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        openapi_provider_class=GatewayOpenAPIProvider,
    )
    install_cached_conversion(app)
    install_error_handlers(app)

    ensure_state_dir(settings.state_dir)
    store = Store.for_settings(settings)
    metrics = GatewayMetrics()
    admin_token, admin_created = _admin_token(settings)
    auth = Authenticator(settings, store, metrics, plugins, admin_token)

    async def observe(event: Any) -> None:
        await plugins.call_async("gateway_on_event", event=event, app=app, log_errors=True)

    hub = EventHub(
        store,
        heartbeat_seconds=settings.events.heartbeat_seconds,
        poll_seconds=settings.events.poll_seconds,
        page_limit_max=settings.events.page_limit_max,
        observers=observe if plugins.has_impls("gateway_on_event") else None,
        subscriber_queue_max=settings.events.subscriber_queue_max,
        max_streams_per_principal=settings.events.max_streams_per_principal,
        metrics=metrics,
    )
    ctx = GatewayContext(
        settings=settings,
        plugins=plugins,
        store=store,
        hub=hub,
        auth=auth,
        metrics=metrics,
        lifecycle=Lifecycle(store, settings.server.max_websockets_per_principal, metrics),
        gates=plugins.collect("gateway_register_policy_gates", "policy gate"),
        ws_kinds=plugins.collect("gateway_register_ws_kinds", "WebSocket kind"),
        # The host's registry hooks and the plugins' (declared with registry_hookspec).
        registries={
            kind: plugins.collect(hook, label)
            for kind, (hook, label) in plugins.registry_hooks.items()
        },
        migrations=collect_migrations(plugins),
        services=Services(plugins),
        admin_token=admin_token,
        admin_token_created=admin_created,
    )
    app.extensions[EXTENSION_KEY] = ctx
    ctx.retention = Retention(ctx)

    _register_blueprints(app, ctx)
    ctx.metrics.in_flight.set_function(lambda: ctx.lifecycle.in_flight)
    _install_request_hooks(app, ctx)
    _install_lifecycle(app, ctx)
    return app


def _admin_token(settings: Settings) -> tuple[str | None, bool]:
    if settings.auth.tokens or settings.auth.mode == "localhost-dev":
        return None, False
    return load_or_create_admin_token(settings.state_dir / settings.auth.admin_token_file)


def collect_migrations(plugins: PluginHost) -> list[Migration]:
    """The migrations the loaded plugins register (the host's own are the store's)."""
    registry = Registry("migration")

    def register_for(plugin: str) -> Callable[[Migration], None]:
        def register(migration: Migration) -> None:
            if not isinstance(migration, Migration):
                raise PluginError(f"plugin {plugin!r} registered a migration that is not one")
            if migration.namespace == "host":
                raise PluginError(f"plugin {plugin!r} may not add to the 'host' namespace")
            registry.add(plugin, f"{migration.namespace}#{migration.version}", migration)

        return register

    plugins.call_register("gateway_register_migrations", register_for)
    return list(registry.items.values())


def _rule_key(rule: str) -> str:
    return re.sub(r"<[^>]*>", "<>", rule)


def _register_blueprints(app: Quart, ctx: GatewayContext) -> None:
    seen: dict[tuple[str, str], str] = {}
    blueprint_owner: dict[str, str] = {}

    def register_for(_plugin: str) -> Callable[[Any], None]:
        def register(blueprint: Any) -> None:
            if blueprint.name in blueprint_owner:
                raise PluginError(
                    f"blueprint {blueprint.name!r} is registered by both plugin "
                    f"{blueprint_owner[blueprint.name]!r} and plugin {_plugin!r}"
                )
            before = {r.endpoint for r in app.url_map.iter_rules()}
            app.register_blueprint(blueprint)
            blueprint_owner[blueprint.name] = _plugin
            for rule in app.url_map.iter_rules():
                if rule.endpoint in before:
                    continue
                methods = tuple(sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}))
                if rule.websocket:  # a WebSocket and an HTTP route may share a path
                    methods = ("WS",)
                for method in methods or ("GET",):
                    key = (method, _rule_key(rule.rule))
                    if key in seen:
                        raise PluginError(
                            f"route {method} {rule.rule} is registered by both plugin "
                            f"{seen[key]!r} and plugin {_plugin!r}"
                        )
                    seen[key] = _plugin
                view = app.view_functions[rule.endpoint]
                gate = gate_of(view)
                if gate is not None and gate not in ctx.gates:
                    raise PluginError(
                        f"plugin {_plugin!r} route {rule.rule} requires policy gate {gate!r}, "
                        "which no plugin declares"
                    )
                doc = (view.__doc__ or "").strip().splitlines()
                ctx.routes.append(
                    RouteInfo(
                        endpoint=rule.endpoint,
                        rule=rule.rule,
                        methods=methods,
                        plugin=_plugin,
                        public=is_public(view),
                        gate=gate,
                        websocket=bool(getattr(rule, "websocket", False)),
                        summary=doc[0] if doc else "",
                    )
                )

        return register

    ctx.plugins.call_register("gateway_register_blueprints", register_for, settings=ctx.settings)


def _install_request_hooks(app: Quart, ctx: GatewayContext) -> None:
    metrics = ctx.metrics
    lifecycle = ctx.lifecycle
    max_body = ctx.settings.server.max_body_bytes
    origins = OriginPolicy(ctx.settings.server)

    def view_for(req: Any) -> Any:
        rule = req.url_rule
        if rule is None or req.routing_exception is not None:
            return None
        if rule.endpoint in HOST_PUBLIC_ENDPOINTS:
            return _HOST_PUBLIC
        return app.view_functions.get(rule.endpoint)

    def check_origin(req: Any) -> str | None:
        # The auth mode applies live (PATCH, reload); [server] only at a restart.
        return origins.check(req, ctx.settings.auth.mode == "localhost-dev")

    # These hooks run on every request: each proxy (request, g) is dereferenced once, and
    # per-request state rides on the request object itself.
    @app.before_request
    async def _before() -> Response | None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        req.gw_start = time.perf_counter()
        lifecycle.request_started()
        req.gw_counted = True
        req.gw_cors = cors = check_origin(req)
        if cors is not None and is_preflight(req):
            return origins.preflight(cors, req)
        length = req.content_length
        if length is not None and length > max_body:
            raise _too_large(max_body)  # announced: refused before anything is read
        view = view_for(req)
        if view is None:
            if isinstance(req.routing_exception, WebsocketMismatch):
                # Plain HTTP to a WebSocket route: credentials first (401), then the 400.
                await ctx.auth.check(req, _websocket_view(app, req), websocket=True)
            return None  # 404 / 405 / 400 follow from routing
        if lifecycle.draining and not is_public(view):
            raise GatewayError(
                503, "draining", "the gateway is shutting down", headers={"Retry-After": "5"}
            )
        # Authentication looks at the headers only: the body of an unauthenticated request
        # is never read (a chunked or length-less one could otherwise hold memory and a
        # task for the whole body timeout).
        g.principal = await ctx.auth.check(req, view)
        if req.method in _BODY_METHODS and not takes_raw_body(view):
            await req.check_json_body()
        return None

    @app.after_request
    async def _after(response: Response) -> Response:
        req = request._get_current_object()  # type: ignore[attr-defined]
        start = getattr(req, "gw_start", None)
        if start is not None:
            rule = req.url_rule.rule if req.url_rule is not None else "<unmatched>"
            method = req.method if req.method in _KNOWN_METHODS else "OTHER"
            metrics.observe_request(method, rule, response.status_code, time.perf_counter() - start)
        origins.decorate(response, getattr(req, "gw_cors", None))
        return response

    @app.teardown_request
    async def _teardown(_exc: BaseException | None) -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        if getattr(req, "gw_counted", False):
            req.gw_counted = False
            lifecycle.request_finished()

    @app.before_websocket
    async def _before_ws() -> None:
        ws = websocket._get_current_object()  # type: ignore[attr-defined]
        check_origin(ws)
        view = view_for(ws)
        if view is None:
            return
        if lifecycle.draining:
            raise GatewayError(503, "draining", "the gateway is shutting down")
        g.principal = await ctx.auth.check(ws, view, websocket=True)


def _websocket_view(app: Quart, req: Any) -> Any:
    """The view of the WebSocket route a plain HTTP request's path names."""
    adapter = app.create_url_adapter(req)
    if adapter is None:  # only without a request context
        raise GatewayError(400, "websocket_required", "this route only accepts WebSockets")
    rule, _args = adapter.match(return_rule=True, websocket=True)
    return app.view_functions[rule.endpoint]


# Anything else is labelled OTHER, so a client cannot grow the metric label sets.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, "payload_too_large", f"request body exceeds the limit of {limit} bytes"
    )


def _host_public() -> None:
    """Marker view for routes the host serves without auth."""


_host_public._gateway_public = True  # type: ignore[attr-defined]
_HOST_PUBLIC = _host_public


def _install_lifecycle(app: Quart, ctx: GatewayContext) -> None:
    @app.before_serving
    async def _startup() -> None:
        await ctx.store.open(ctx.migrations)
        await ctx.hub.start()
        await ctx.auth.reconcile_sessions()
        await ctx.plugins.call_async("gateway_startup", app=app)
        if ctx.retention is not None:
            ctx.retention.start()

    @app.after_serving
    async def _shutdown() -> None:
        ctx.lifecycle.draining = True
        if ctx.retention is not None:
            await ctx.retention.stop()
        # A plugin that fails to shut down is logged; the others still shut down.
        await ctx.plugins.call_async("gateway_shutdown", log_errors=True, app=app)
        await ctx.hub.close()
        await ctx.store.close()


__all__ = ["context", "create_app"]
