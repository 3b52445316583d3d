"""One pluggy PluginManager per app: built-in plugins, entry-point plugins, enable/disable.

A plugin disabled in ``gateway.toml`` (``[plugins.<name>] enabled = false``) is blocked
before its module is imported. ``GATEWAY_LOAD_PLUGINS`` (``load_plugins``) limits which
third-party plugins load. Misspelt hook names fail start-up naming the plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from host import hookspecs
from host.settings import Settings

log = logging.getLogger("gateway.plugins")

ENTRY_POINT_GROUP = "agent_gateway"

# Built-in route families: (plugin name, module). The host knows plugins only through here.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("control", "plugins.control"),
    ("openai_compat", "plugins.openai_compat"),
    ("pipelines", "plugins.pipelines"),
)


class PluginError(Exception):
    """A plugin problem that stops start-up; the message names the plugin."""


@dataclass
class PluginInfo:
    name: str
    source: str  # "builtin" | "entrypoint" | "instance"
    module: str
    version: str | None = None
    distribution: str | None = None
    enabled: bool = True
    hooks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "module": self.module,
            "version": self.version,
            "distribution": self.distribution,
            "enabled": self.enabled,
            "hooks": sorted(self.hooks),
        }


class Registry:
    """Names registered through a ``register`` callback, with the plugin that owns each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[str, Any] = {}
        self.owners: dict[str, str] = {}

    def add(self, plugin: str, name: str, value: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} with an empty name")
        if name in self.items:
            raise PluginError(
                f"{self.kind} {name!r} is registered by both plugin {self.owners[name]!r} "
                f"and plugin {plugin!r}"
            )
        self.items[name] = value
        self.owners[name] = plugin

    def by_owner(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, owner in self.owners.items():
            out.setdefault(owner, []).append(name)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __getitem__(self, name: str) -> Any:
        return self.items[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.items.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class PluginHost:
    """Wraps the PluginManager: loading, and one typed method per registration hook."""

    def __init__(
        self,
        settings: Settings,
        *,
        builtins: tuple[tuple[str, str], ...] = BUILTIN_PLUGINS,
        extra_plugins: list[tuple[str, object]] | None = None,
        load_entrypoints: bool = True,
    ) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._load_builtins(builtins)
        for name, obj in extra_plugins or []:
            self._register(obj, name, PluginInfo(name, "instance", _module_name(obj)))
        if load_entrypoints:
            self._load_entrypoints()
        self._check_hooks()

    # -- loading ---------------------------------------------------------------------------

    def _load_builtins(self, builtins: tuple[tuple[str, str], ...]) -> None:
        for name, module_name in builtins:
            if not self.settings.plugin_enabled(name):
                self.infos[name] = PluginInfo(name, "builtin", module_name, enabled=False)
                continue
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                raise PluginError(f"built-in plugin {name!r} failed to import: {exc}") from exc
            self._register(module, name, PluginInfo(name, "builtin", module_name))

    def _load_entrypoints(self) -> None:
        wanted = self.settings.load_plugins
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else None
            version = ep.dist.version if ep.dist else None
            info = PluginInfo(ep.name, "entrypoint", ep.value, version, dist)
            if wanted is not None and ep.name not in wanted:
                info.enabled = False
                self.infos.setdefault(ep.name, info)
                continue
            if not self.settings.plugin_enabled(ep.name):
                info.enabled = False
                self.infos.setdefault(ep.name, info)
                continue
            if ep.name in self.infos:
                raise PluginError(
                    f"plugin name {ep.name!r} from distribution {dist!r} clashes with the "
                    f"{self.infos[ep.name].source} plugin of that name"
                )
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(f"plugin {ep.name!r} ({dist}) failed to import: {exc}") from exc
            self._register(obj, ep.name, info)

    def _register(self, obj: object, name: str, info: PluginInfo) -> None:
        if name in self.infos and self.infos[name].enabled:
            raise PluginError(f"two plugins are named {name!r}")
        if self.pm.is_registered(obj):
            other = self.pm.get_name(obj)
            raise PluginError(
                f"plugin {name!r} ({info.module}) is already loaded as plugin {other!r}"
            )
        try:
            self.pm.register(obj, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        info.hooks = [impl.name for impl in self.pm.get_hookcallers(obj) or []]
        self.infos[name] = info

    def _check_hooks(self) -> None:
        # A function named gateway_* that matches no hookspec is a misspelt hook.
        for name, plugin in self.pm.list_name_plugin():
            for attr in dir(plugin):
                if not attr.startswith("gateway_"):
                    continue
                if attr not in hookspecs.HOOK_NAMES and callable(getattr(plugin, attr)):
                    raise PluginError(
                        f"plugin {name!r} implements unknown hook {attr!r}; known hooks: "
                        f"{', '.join(sorted(hookspecs.HOOK_NAMES))}"
                    )
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(str(exc)) from exc

    # -- calling ---------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def impls(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, function) for every implementation, in registration order."""
        caller = getattr(self.pm.hook, hook_name)
        out = []
        for impl in caller.get_hookimpls():  # registration order: built-ins first
            out.append((impl.plugin_name, _bind(impl)))
        return out

    def has_impls(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (the set is fixed once the app is
        built, so callers on a hot path may keep the answer)."""
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def collect(self, hook_name: str, kind: str, **kwargs: Any) -> Registry:
        """Call a registration hook with a ``register(name, value)`` callback per plugin."""
        registry = Registry(kind)
        for plugin, fn in self.impls(hook_name):

            def register(name: str, value: Any = None, _plugin: str = plugin) -> None:
                registry.add(_plugin, name, value)

            fn(register=register, **kwargs)
        return registry

    async def call_async(
        self,
        hook_name: str,
        *,
        log_errors: bool = False,
        return_errors: bool = False,
        **kwargs: Any,
    ) -> list[tuple[str, Any]]:
        """Call every implementation, awaiting awaitables; returns (plugin, result).

        With ``log_errors`` an implementation that raises is logged and left out of the
        results, and the others are still called (observers); with ``return_errors`` its
        exception is its result (callers that report each plugin's failure); otherwise
        it propagates.
        """
        results: list[tuple[str, Any]] = []
        for plugin, fn in self.impls(hook_name):
            try:
                result = fn(**kwargs)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                if return_errors:
                    results.append((plugin, exc))
                    continue
                if not log_errors:
                    raise
                log.exception("plugin %s failed in %s", plugin, hook_name)
                continue
            results.append((plugin, result))
        return results

    def plugin_list(self) -> list[dict[str, Any]]:
        return [info.as_dict() for info in self.infos.values()]


def _bind(impl: Any) -> Callable[..., Any]:
    """Call a hookimpl with only the arguments it names (pluggy's rule)."""
    argnames = impl.argnames
    fn = impl.function

    def call(**kwargs: Any) -> Any:
        return fn(**{k: kwargs[k] for k in argnames})

    return call


def _module_name(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
