"""The per-app gateway context: everything a request or plugin needs, hung off the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart import Quart, current_app

try:  # Quart's app-context variable, what ``current_app`` reads (a private name)
    from quart.globals import _cv_app
except ImportError:  # pragma: no cover - a Quart without it: the proxy then
    _cv_app = None  # type: ignore[assignment]

from host.auth.guard import Authenticator
from host.events import EventHub
from host.lifecycle import Lifecycle
from host.metrics import GatewayMetrics
from host.plugins import PluginError, PluginHost, Registry
from host.services import Services
from host.settings import Settings
from host.storage import Store

if TYPE_CHECKING:
    from host.retention import Retention
    from host.storage import Migration

EXTENSION_KEY = "gateway"


@dataclass
class RouteInfo:
    endpoint: str
    rule: str
    methods: tuple[str, ...]
    plugin: str
    public: bool
    gate: str | None
    websocket: bool
    summary: str


@dataclass
class GatewayContext:
    settings: Settings
    plugins: PluginHost
    store: Store
    hub: EventHub
    auth: Authenticator
    metrics: GatewayMetrics
    lifecycle: Lifecycle
    gates: Registry
    ws_kinds: Registry
    registries: dict[str, Registry]
    migrations: list[Migration]
    services: Services
    routes: list[RouteInfo] = field(default_factory=list)
    admin_token: str | None = None
    admin_token_created: bool = False
    # A plugin's own state (never another plugin's: plugins reach each other by services).
    extras: dict[str, Any] = field(default_factory=dict)
    retention: Retention | None = None  # the background prune, set by create_app

    def registry(self, kind: str) -> Registry:
        """What a registry hook collected: ``tools``, ``secret_keys``, ``safety_scanners``,
        or a plugin's (``step_kinds``, ``pipelines``, ``providers``)."""
        found = self.registries.get(kind)
        if found is None:
            raise PluginError(
                f"no loaded plugin declares the {kind!r} registry (known: "
                f"{', '.join(sorted(self.registries))})"
            )
        return found


def context(app: Quart | None = None) -> GatewayContext:
    """The gateway context of ``app`` (or of the current app)."""
    if app is None:
        # What ``current_app`` reads, without the proxy: a model call asks ~10 times.
        app_ctx = _cv_app.get(None) if _cv_app is not None else None
        target = app_ctx.app if app_ctx is not None else current_app  # (the usual error)
    else:
        target = app
    ctx: GatewayContext = target.extensions[EXTENSION_KEY]
    return ctx
