"""Typed services: how plugins reach each other without importing each other's internals.

A plugin provides an object under a type from its contract module
(``provide(PipelinesAPI, api)``, usually in ``gateway_startup``); another asks for it by
that type (``service(PipelinesAPI)``) and gets it typed. A service that is not there
(its plugin disabled, not started yet, or stopped) is a 503 ``service_unavailable`` whose
message names the plugin that provides it, and ``has_service`` asks first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from host.errors import GatewayError
from host.hookcalls import running_plugin
from host.plugins import PluginError

if TYPE_CHECKING:
    from host.plugins import PluginHost

T = TypeVar("T")


class ServiceUnavailable(GatewayError):
    """The service asked for is not provided in this gateway now."""

    def __init__(self, message: str) -> None:
        super().__init__(503, "service_unavailable", message)


def service_name(kind: type[Any]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class Services:
    """The services of one app, by type, with the plugin that provides each."""

    def __init__(self, plugins: PluginHost) -> None:
        self._plugins = plugins
        self._impls: dict[type[Any], Any] = {}
        self._providers: dict[type[Any], str] = {}

    def provide(self, kind: type[T], impl: T) -> None:
        """Offer ``impl`` as the ``kind`` service; the plugin whose hook is running
        provides it. Providing it again from the same plugin replaces it (after a reload);
        from another plugin it is an error naming both."""
        if not getattr(kind, "_is_protocol", False) and not isinstance(impl, kind):
            raise TypeError(f"{impl!r} is not a {service_name(kind)}")
        plugin = running_plugin() or self._owner(kind) or "unknown"
        current = self._providers.get(kind)
        if current is not None and current != plugin:
            raise PluginError(
                f"the {service_name(kind)} service is provided by both plugin {current!r} "
                f"and plugin {plugin!r}"
            )
        self._impls[kind] = impl
        self._providers[kind] = plugin

    def withdraw(self, kind: type[Any]) -> None:
        """Stop offering ``kind`` (at shutdown); asking for it is then a 503 again."""
        self._impls.pop(kind, None)
        self._providers.pop(kind, None)

    def has(self, kind: type[Any]) -> bool:
        return kind in self._impls

    def get(self, kind: type[T]) -> T:
        """The ``kind`` service; :class:`ServiceUnavailable` naming its plugin if absent."""
        if kind in self._impls:
            found: T = self._impls[kind]
            return found
        raise ServiceUnavailable(self.missing(kind))

    def missing(self, kind: type[Any]) -> str:
        """Why ``kind`` is not there, naming the plugin that would provide it."""
        name = service_name(kind)
        info = self._plugins.plugin_of_module(kind.__module__)
        if info is None:
            return f"no plugin provides the {name} service in this gateway"
        if not info.enabled:
            return (
                f"the {name} service is provided by plugin {info.name!r}, which is not loaded "
                f"in this gateway ([plugins.{info.name}] enabled = false, or load_plugins)"
            )
        return (
            f"the {name} service of plugin {info.name!r} is not available: the plugin "
            "provides it once started and withdraws it when it stops"
        )

    def providers(self) -> dict[str, str]:
        """``{service name: plugin}`` of the services provided now."""
        return {service_name(kind): plugin for kind, plugin in self._providers.items()}

    def _owner(self, kind: type[Any]) -> str | None:
        info = self._plugins.plugin_of_module(kind.__module__)
        return info.name if info is not None else None
