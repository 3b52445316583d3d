"""The hooks of the host. Prefix ``gateway_``; all are documented in
``docs/reference/plugins.md`` and each has a test named after it.

A plugin that offers an extension point declares its own hooks in a module of its own
(``plugins/pipelines/hookspecs.py``) and hands it to the host through
:func:`gateway_register_hookspecs`, as pytest plugins do through ``pytest_addhooks``.

pluggy calls the hooks, in its order: implementations run in the order the plugins were
loaded (built-ins, then plugins passed to ``create_app``, then installed ones), except
that ``tryfirst``/``trylast`` move one to the front or back and wrappers
(``wrapper=True``) run around the others. Hooks marked *awaitable* may return a
coroutine: the host awaits each result in that order. No hook uses pluggy's
``firstresult`` (it would stop at the first coroutine): for the hook with one answer
(:func:`gateway_actor_from_request`) the host awaits the results in order and takes the
first that is not ``None``.

Registration hooks receive a ``register`` callback that knows which plugin is calling,
so the host knows who registered what and refuses a duplicate name with an error naming
both. A registration hook declared with :func:`registry_hookspec` feeds a registry of its
own (``context().registry(kind)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

if TYPE_CHECKING:
    import click
    from quart import Quart

    from host.auth.principal import Principal
    from host.context import GatewayContext
    from host.events import Event
    from host.settings import Settings
    from host.storage import Store
    from host.tools import Tool, ToolCall

PROJECT = "agent_gateway"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]

# The attribute that marks a registration hookspec as feeding a registry: (kind, label).
REGISTRY_ATTR = "gateway_registry"
_Spec = TypeVar("_Spec", bound=Callable[..., Any])


def registry_hookspec(kind: str, label: str) -> Callable[[_Spec], _Spec]:
    """Declare a registration hook whose ``register(name, value)`` calls the host collects,
    at start-up, into ``context().registry(kind)`` (a duplicate name fails start-up naming
    both plugins; ``label`` names one entry in that message: ``"step kind"``)."""

    def declare(spec: _Spec) -> _Spec:
        setattr(spec, REGISTRY_ATTR, (kind, label))
        marked: _Spec = hookspec(spec)
        return marked

    return declare


@hookspec
def gateway_register_hookspecs(register: Register) -> None:
    """Declare hooks of the plugin's own, for other plugins to implement:
    ``register(module_or_class)``.

    :param register: ``register(namespace)`` where ``namespace`` (a module or class)
        holds functions decorated with ``host.api.hookspec`` or
        ``host.api.registry_hookspec``, each named ``gateway_<something>``.

    All implementations are called at start-up, before any plugin hook is called. A hook
    declared twice (by two plugins, or by a plugin and the host) fails start-up naming
    both; an implementation whose arguments the declaration lacks fails start-up naming
    the implementing plugin.
    """


@hookspec
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    """Register Quart blueprints: ``register(blueprint)``.

    :param register: ``register(blueprint: quart.Blueprint)``; a route (method + path)
        already registered by another plugin is a start-up error naming both plugins.
    :param settings: the gateway settings, to shape routes by configuration.

    All implementations are called. Views are protected by default; mark public ones
    with :func:`host.api.public` and gated ones with :func:`host.api.requires_gate`.
    """


@hookspec
def gateway_register_policy_gates(register: Register) -> None:
    """Declare policy gates: ``register(name, description)``.

    :param register: ``register(name: str, description: str)``.

    All implementations are called. A gate named by a route but declared by no plugin is
    a start-up error; a gate declared twice is a start-up error naming both plugins.
    """


@hookspec
def gateway_register_migrations(register: Register) -> None:
    """Contribute versioned store migrations: ``register(migration)``.

    :param register: ``register(migration: host.storage.Migration)``; a migration is
        identified by ``(namespace, version)``; duplicates fail start-up.

    All implementations are called. Migrations are applied at start, in version order per
    namespace, under the store's migration lock, once per state directory.
    """


@hookspec
def gateway_register_ws_kinds(register: Register) -> None:
    """Add request kinds to the ``/gateway/ws`` protocol: ``register(kind, handler)``.

    :param register: ``register(kind: str, handler)`` where
        ``async handler(payload: dict, ctx: host.ws.WsContext) -> dict`` returns the
        response payload (sent as kind ``<kind without .request>.response``).

    All implementations are called; a kind registered twice fails start-up.
    """


@registry_hookspec("tools", "tool")
def gateway_register_tools(register: Register) -> None:
    """Register tools agents may call: ``register(name, tool)``.

    :param register: ``register(name: str, tool: object)``; a ``host.api.Tool``
        (description, JSON schema of its arguments, function), or a callable (or object
        with ``run(**args)``) described by its docstring and signature.

    All implementations are called; a tool name registered twice fails start-up. Call a
    tool with ``host.api.call_tool`` (timed, scanned, observed), never directly.
    """


@hookspec
def gateway_before_tool_call(
    gateway: GatewayContext, name: str, args: dict[str, Any], caller: dict[str, Any]
) -> Any:
    """Admit or refuse a tool call made through ``host.api.call_tool``.

    :param gateway: the calling app's gateway context (``extras``, ``settings``).
    :param name: the tool's registered name.
    :param args: the arguments it is about to be called with (do not change them).
    :param caller: who calls (``{"kind": "pipeline", "run_id": ..., "owner": ...}``).

    Awaitable. All implementations are called before the tool runs; one that raises
    ``host.api.ToolError`` refuses the call (the caller sees that error, observers a
    failed call); return values are ignored.
    """


@hookspec
def gateway_tool_approval(
    gateway: GatewayContext, name: str, args: dict[str, Any], caller: dict[str, Any], tool: Tool
) -> Any:
    """Hold a tool call made through ``host.api.call_tool`` for a person's approval.

    :param gateway: the calling app's gateway context.
    :param name: the tool's registered name.
    :param args: the arguments, already checked against the tool's schema.
    :param caller: who calls; ``caller["approval_id"]`` names an approval the caller was
        given for this exact call.
    :param tool: the ``host.api.Tool`` (``tool.approval`` is its own mark).

    Awaitable. Called after ``gateway_before_tool_call`` and the argument check, right
    before the tool runs; one that raises ``host.api.ToolError`` stops the call
    (``approval_required`` with ``details["approval_id"]``, or why the caller's approval
    does not admit it). The built-in tools plugin implements it (``[plugins.tools.approval]``).
    """


@hookspec
def gateway_on_tool_call(gateway: GatewayContext, call: ToolCall) -> Any:
    """Observe every finished tool call made through ``host.api.call_tool``.

    :param gateway: the calling app's gateway context.
    :param call: a ``host.api.ToolCall``: ``tool``, ``caller``, ``started_ms``,
        ``duration_ms``, ``ok``, ``error`` (a code) and ``message``.

    Awaitable. All implementations are called after the call ended, refused and failed
    calls included; exceptions are logged and never reach the caller. Keep it cheap: it
    runs on every call (batch any store writes).
    """


@registry_hookspec("safety_scanners", "safety scanner")
def gateway_register_safety_scanners(register: Register) -> None:
    """Register safety scanners for text entering and leaving models:
    ``register(name, scanner)``.

    :param register: ``register(name: str, scanner: host.safety.Scanner)``; a scanner has
        ``async scan(text, *, direction, context) -> host.safety.Verdict | None``.

    All implementations are called; a scanner name registered twice fails start-up.
    Scanners run in registration order on model input (before the provider is called) and
    output (tool-call arguments included; streamed output is rescanned as it grows, so a
    redaction must leave its own output unchanged); the strongest verdict wins (block >
    redact > warn).

    Each scan names its stage (``context["stage"]``, one of ``host.safety.STAGES``).
    Declared by the host (the surfaces that scan need it whether or not the safety plugin
    is enabled); the built-in safety plugin registers its rule scanner through it.
    """


@registry_hookspec("secret_keys", "secret key")
def gateway_register_secret_keys(register: Register) -> None:
    """Declare which configuration keys hold secrets: ``register(key, description)``.

    :param register: ``register(key: str, description: str)``; ``key`` is dotted from the
        top of the configuration, ``*`` standing for any one key
        (``"models.*.api_key"``, ``"plugins.weather.client_secret"``).

    All implementations are called; a key declared twice fails start-up. A value at a
    declared key (or under it) is shown masked by ``GET /gateway/config`` and
    ``gateway config show`` unless it is a reference (``{ env }``, ``{ file }``), and a
    ``PATCH /gateway/config`` that writes a literal there is refused.
    """


@hookspec
def gateway_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``gateway`` command line.

    :param cli: the root ``click.Group``; decorate functions with ``@cli.command()``.

    All implementations are called when the CLI starts.
    """


@hookspec
def gateway_startup(app: Quart) -> Any:
    """Run when the app starts serving, after the store is open and migrated.

    :param app: the Quart app; ``host.api.context(app)`` gives the gateway context.

    Awaitable. All implementations are called, in pluggy's order (see above); an
    exception fails start-up.
    """


@hookspec
def gateway_shutdown(app: Quart) -> Any:
    """Run when the app stops, before the store closes.

    :param app: the Quart app.

    Awaitable. All implementations are called; exceptions are logged, not raised.
    """


@hookspec
def gateway_reload(app: Quart, settings: Settings) -> Any:
    """Re-read whatever the plugin loads from disk after ``POST /gateway/reload`` or a
    config PATCH; the new settings are already in force.

    :param app: the Quart app.
    :param settings: the new settings.

    Awaitable. All implementations are called. Return a JSON-able dict to report what was
    reloaded (it appears under the plugin's name in the reload response); raise to report
    an error for this plugin without undoing the others.
    """


@hookspec
def gateway_validate_config(app: Quart, settings: Settings) -> Any:
    """Check the plugin's part of a configuration before it is used: at
    ``gateway config check``, before a config PATCH is written and before
    ``POST /gateway/reload`` applies it.

    :param app: the Quart app (``host.api.context(app)`` gives the registries); under
        ``gateway config check`` it has not started, so its store is not open.
    :param settings: the candidate settings, not yet in force.

    Awaitable. All implementations are called; each returns a list of problems (strings
    naming the key, e.g. ``models.gpt.base_url: ...``) or ``None``. Any problem refuses the
    configuration (400 ``config_invalid``, or exit 1 for the check) and the running
    configuration stays as it was; an exception counts as a problem of that plugin.
    """


@hookspec
def gateway_on_event(event: Event, app: Quart) -> Any:
    """Observe every event appended to any stream (audit, metrics, dashboards).

    :param event: the stored event, with ``stream``, ``seq``, ``type``, ``ts_ms`` and
        ``data``.
    :param app: the Quart app whose hub published it (``host.api.context(app)``).

    Awaitable. All implementations are called after the event is stored; exceptions are
    logged and never reach the publisher.
    """


@hookspec
def gateway_prune(store: Store, settings: Settings, now_ms: int, dry_run: bool) -> Any:
    """Remove the plugin's old data by the ``[retention]`` settings: the background task
    of every worker and ``gateway db prune`` call it.

    :param store: the open store; delete in short transactions of at most
        ``settings.retention.batch_size`` rows (``Store.delete_batched``), as other workers
        write meanwhile.
    :param settings: the gateway settings (``settings.retention``).
    :param now_ms: the time ages are counted from (Unix ms).
    :param dry_run: count what would go, remove nothing.

    Awaitable. All implementations are called; each returns ``{kind: rows}`` (what it
    removed, or would remove) or ``None``. An exception is logged and reported for that
    plugin; the others still prune. Never remove what is still in use (an unfinished run).
    """


@hookspec
def gateway_actor_from_request(request: Any, settings: Settings) -> Any:
    """Authenticate a request by a scheme of the plugin's own.

    :param request: the Quart request or websocket.
    :param settings: the gateway settings.

    Awaitable. Called before the built-in auth mode; the results are awaited in pluggy's
    order and the first that is not ``None`` (a :class:`host.auth.Principal`) wins, the
    later ones are not awaited; return ``None`` to abstain.
    """


@hookspec
def gateway_status(app: Quart) -> Any:
    """Contribute a section to ``GET /gateway/status`` and the ``gateway.status`` WS kind.

    :param app: the Quart app.

    Awaitable. All implementations are called; each returns a JSON-able dict (or
    ``None``) shown under the plugin's name in ``plugin_status``.
    """


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name in dir() if name.startswith("gateway_") and callable(globals()[name])
)

_ = Principal if TYPE_CHECKING else None
