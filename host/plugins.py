"""One pluggy PluginManager per app: built-in plugins, entry-point plugins, enable/disable.

A plugin disabled in ``gateway.toml`` (``[plugins.<name>] enabled = false``) is blocked
before its module is imported. ``GATEWAY_LOAD_PLUGINS`` (``load_plugins``) limits which
third-party plugins load. Misspelt hook names fail start-up naming the plugin. Plugins
declare hooks of their own through ``gateway_register_hookspecs``; pluggy calls every hook.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

import pluggy

from host import hookspecs
from host.hookcalls import Outcome, attributed, close, record, running_plugin, settle
from host.settings import Settings

log = logging.getLogger("gateway.plugins")

ENTRY_POINT_GROUP = "agent_gateway"

# Built-in route families: (plugin name, module). The host knows plugins only through here.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("control", "plugins.control"),
    ("openai_compat", "plugins.openai_compat"),
    ("pipelines", "plugins.pipelines"),
    ("sessions", "plugins.sessions"),
    ("safety", "plugins.safety"),
    ("audit", "plugins.audit"),
    ("dashboard", "plugins.dashboard"),
    ("training", "plugins.training"),
    ("cortex", "plugins.cortex"),
    ("tools", "plugins.tools"),
    ("jobs", "plugins.jobs"),
    ("ui_telemetry", "plugins.ui_telemetry"),
    ("channels", "plugins.channels"),
    ("deploy", "plugins.deploy"),
    ("agents", "plugins.agents"),
    ("coding_agent_bridge", "plugins.coding_agent_bridge"),
    ("mcp", "plugins.mcp"),
    ("acp_gateway", "plugins.acp_gateway"),
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

    def remove(self, name: str) -> None:
        """Drop ``name`` (a runtime registry such as ``tools`` changes after start-up)."""
        self.items.pop(name, None)
        self.owners.pop(name, None)

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


@dataclass(frozen=True)
class HookDeclaration:
    """A hook and who declares it: ``"host"`` (``host/hookspecs.py``) or a plugin."""

    name: str
    plugin: str
    spec: Callable[..., Any]

    @property
    def registry(self) -> tuple[str, str] | None:
        """``(kind, label)`` when the hook feeds ``context().registry(kind)``."""
        found: tuple[str, str] | None = getattr(self.spec, hookspecs.REGISTRY_ATTR, None)
        return found


HOST = "host"  # the declarer of the host's own hooks


class PluginHost:
    """Wraps the PluginManager: loading, hook declarations, and calls through pluggy that
    say which plugin answered what (``host/hookcalls.py``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        builtins: tuple[tuple[str, str], ...] = BUILTIN_PLUGINS,
        extra_plugins: Sequence[tuple[str, object]] | None = None,
        load_entrypoints: bool = True,
    ) -> None:
        self.settings = settings
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.objects: dict[str, object] = {}  # each loaded plugin, in load order
        self.declarations: dict[str, HookDeclaration] = {
            name: HookDeclaration(name, HOST, getattr(hookspecs, name))
            for name in hookspecs.HOOK_NAMES
        }
        self._load_builtins(builtins)
        for name, obj in extra_plugins or []:
            self._load(obj, name, PluginInfo(name, "instance", _module_name(obj)))
        if load_entrypoints:
            self._load_entrypoints()
        # pluggy calls the plugin registered last first: registering in reverse makes the
        # call order the load order (built-ins, then instances, then installed plugins).
        for name in reversed(list(self.objects)):
            self._register(name)
        self._declare_plugin_hooks()
        self._check_hooks()
        self.registry_hooks = self._registry_hooks()

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
            self._load(module, name, PluginInfo(name, "builtin", module_name))

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
            self._load(obj, ep.name, info)

    def _load(self, obj: object, name: str, info: PluginInfo) -> None:
        if name in self.infos and self.infos[name].enabled:
            raise PluginError(f"two plugins are named {name!r}")
        for other, loaded in self.objects.items():
            if loaded is obj:
                raise PluginError(
                    f"plugin {name!r} ({info.module}) is already loaded as plugin {other!r}"
                )
        self.objects[name] = obj
        self.infos[name] = info

    def _register(self, name: str) -> None:
        implementations = _implementations(self.objects[name], name, self.pm)
        try:
            self.pm.register(implementations, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from exc
        callers = self.pm.get_hookcallers(implementations) or []
        self.infos[name].hooks = [caller.name for caller in callers]

    def _declare_plugin_hooks(self) -> None:
        def register_for(plugin: str) -> Callable[..., None]:
            return lambda namespace: self._declare(plugin, namespace)

        self.call_register("gateway_register_hookspecs", register_for)

    def _declare(self, plugin: str, namespace: Any) -> None:
        names = [n for n in dir(namespace) if self.pm.parse_hookspec_opts(namespace, n) is not None]
        if not names:
            raise PluginError(
                f"plugin {plugin!r} registered hookspecs from {namespace!r}, which declares "
                "none (decorate each with host.api.hookspec)"
            )
        for name in names:
            if not name.startswith("gateway_"):
                raise PluginError(
                    f"plugin {plugin!r} declares hook {name!r}; hook names start with 'gateway_'"
                )
            if name in self.declarations:
                raise PluginError(
                    f"hook {name!r} is declared by both "
                    f"{_who(self.declarations[name].plugin)} and plugin {plugin!r}"
                )
        try:
            # pluggy checks the implementations registered so far against the new specs.
            self.pm.add_hookspecs(namespace)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {self.pm.get_name(exc.plugin)!r}: {exc}") from exc
        for name in names:
            self.declarations[name] = HookDeclaration(name, plugin, getattr(namespace, name))

    def _check_hooks(self) -> None:
        # A gateway_* function that matches no declared hook is misspelt, or belongs to a
        # plugin that is not loaded (whose module, never imported, cannot tell us its hooks):
        # with every plugin loaded it fails start-up; otherwise it is logged and never called.
        strict = all(info.enabled for info in self.infos.values())
        off = sorted(name for name, info in self.infos.items() if not info.enabled)
        for name, plugin in self.objects.items():
            for attr in dir(plugin):
                if not attr.startswith("gateway_") or not callable(getattr(plugin, attr)):
                    continue
                opts: dict[str, Any] = dict(self.pm.parse_hookimpl_opts(plugin, attr) or {})
                hook = opts.get("specname") or attr
                if hook in self.declarations or opts.get("optionalhook"):
                    continue
                if strict:
                    raise PluginError(
                        f"plugin {name!r} implements unknown hook {hook!r}; known hooks: "
                        f"{', '.join(sorted(self.declarations))}"
                    )
                log.warning(
                    "plugin %s implements %s, which no loaded plugin declares, so it is never "
                    "called: a hook of a plugin not loaded here (%s), or misspelt",
                    name,
                    hook,
                    ", ".join(off),
                )
        if strict:
            try:
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                culprit = self.pm.get_name(exc.plugin)
                unknown = str(exc).partition(" in plugin ")[0]
                raise PluginError(f"plugin {culprit!r}: {unknown}") from exc

    def _registry_hooks(self) -> dict[str, tuple[str, str]]:
        """``{kind: (hook, label)}`` of every declared hook that feeds a registry."""
        found: dict[str, HookDeclaration] = {}
        for declaration in self.declarations.values():
            if declaration.registry is None:
                continue
            kind = declaration.registry[0]
            if kind in found:
                raise PluginError(
                    f"registry {kind!r} is declared by both {_who(found[kind].plugin)} "
                    f"({found[kind].name}) and {_who(declaration.plugin)} ({declaration.name})"
                )
            found[kind] = declaration
        return {kind: (d.name, d.registry[1]) for kind, d in found.items() if d.registry}

    def plugin_of_module(self, module: str) -> PluginInfo | None:
        """The plugin (loaded or not) whose package holds ``module``."""
        best: PluginInfo | None = None
        for info in self.infos.values():
            base = info.module.partition(":")[0]
            if module == base or module.startswith(base + "."):
                if best is None or len(base) > len(best.module.partition(":")[0]):
                    best = info
        return best

    # -- calling ---------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def call(self, hook_name: str, *, isolate: bool = False, **kwargs: Any) -> list[Outcome]:
        """Call ``hook_name`` through pluggy; one :class:`Outcome` per implementation (wrappers
        aside), in the order pluggy called them. Awaitable results are not awaited."""
        caller = getattr(self.pm.hook, hook_name, None)
        if caller is None:  # declared by a plugin that is not loaded, and implemented by none
            return []
        return record(lambda: caller(**kwargs), isolate=isolate)

    def call_register(
        self, hook_name: str, register_for: Callable[[str], Callable[..., None]], **kwargs: Any
    ) -> None:
        """Call a registration hook: what an implementation passes to ``register`` goes to
        ``register_for(<its plugin>)``."""
        per_plugin: dict[str, Callable[..., None]] = {}

        def register(*args: Any, **kw: Any) -> None:
            plugin = running_plugin()
            if plugin is None:
                raise PluginError(f"register() of {hook_name} was called outside its hook")
            if plugin not in per_plugin:
                per_plugin[plugin] = register_for(plugin)
            per_plugin[plugin](*args, **kw)

        self.call(hook_name, register=register, **kwargs)

    def collect(self, hook_name: str, kind: str, **kwargs: Any) -> Registry:
        """Call a registration hook with a ``register(name, value)`` callback per plugin."""
        registry = Registry(kind)

        def register_for(plugin: str) -> Callable[..., None]:
            return lambda name, value=None: registry.add(plugin, name, value)

        self.call_register(hook_name, register_for, **kwargs)
        return registry

    async def call_async(
        self,
        hook_name: str,
        *,
        log_errors: bool = False,
        return_errors: bool = False,
        **kwargs: Any,
    ) -> list[tuple[str, Any]]:
        """Call through pluggy, then await each awaitable result in pluggy's order; returns
        (plugin, result) for every implementation.

        With ``log_errors`` an implementation that raises is logged and left out of the
        results, and the others are still called (observers); with ``return_errors`` its
        exception is its result (callers that report each plugin's failure); otherwise
        it propagates, with a note naming the plugin.
        """
        isolate = log_errors or return_errors
        outcomes = self.call(hook_name, isolate=isolate, **kwargs)
        results: list[tuple[str, Any]] = []
        for i, outcome in enumerate(outcomes):
            try:
                await settle(outcome, hook_name, isolate=isolate)
            except BaseException:
                close(outcomes[i + 1 :])
                raise
            if outcome.error is None:
                results.append((outcome.plugin, outcome.result))
            elif return_errors:
                results.append((outcome.plugin, outcome.error))
            else:
                log.error(
                    "plugin %s failed in %s", outcome.plugin, hook_name, exc_info=outcome.error
                )
        return results

    async def call_first(self, hook_name: str, **kwargs: Any) -> tuple[str, Any] | None:
        """(plugin, result) of the first implementation, in pluggy's order, whose result is
        not None once awaited; the later results are not awaited."""
        outcomes = self.call(hook_name, **kwargs)
        for i, outcome in enumerate(outcomes):
            try:
                await settle(outcome, hook_name, isolate=False)
            except BaseException:
                close(outcomes[i + 1 :])
                raise
            if outcome.result is not None:
                close(outcomes[i + 1 :])
                return outcome.plugin, outcome.result
        return None

    def has_impls(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name`` (the set is fixed once the app is
        built, so callers on a hot path may keep the answer)."""
        caller = getattr(self.pm.hook, hook_name, None)
        if caller is None:
            return False
        return any(not (i.wrapper or i.hookwrapper) for i in caller.get_hookimpls())

    def impls(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        """(plugin name, function) for every implementation, in pluggy's call order, for
        inspection: call hooks with :meth:`call` and friends, which keep pluggy's wrappers."""
        caller = getattr(self.pm.hook, hook_name, None)
        impls = caller.get_hookimpls() if caller is not None else []
        return [
            (impl.plugin_name, _bind(impl))
            for impl in reversed(impls)
            if not (impl.wrapper or impl.hookwrapper)
        ]

    def plugin_list(self) -> list[dict[str, Any]]:
        return [info.as_dict() for info in self.infos.values()]


def _implementations(plugin: object, name: str, pm: pluggy.PluginManager) -> SimpleNamespace:
    """What pluggy registers for ``plugin``: its hook implementations, each wrapped to say
    which plugin runs. Wrappers stay as they are (they run around the others)."""
    found: dict[str, Any] = {}
    for attr in dir(plugin):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        fn = getattr(plugin, attr)
        if opts.get("wrapper") or opts.get("hookwrapper"):
            found[attr] = fn
        else:
            found[attr] = attributed(name, opts.get("specname") or attr, fn)
    return SimpleNamespace(**found)


def _bind(impl: Any) -> Callable[..., Any]:
    """Call a hookimpl with only the arguments it names (pluggy's rule)."""
    argnames = impl.argnames
    fn = impl.function

    def call(**kwargs: Any) -> Any:
        return fn(**{k: kwargs[k] for k in argnames})

    return call


def _who(declarer: str) -> str:
    return "the host" if declarer == HOST else f"plugin {declarer!r}"


def _module_name(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return obj.__name__
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
