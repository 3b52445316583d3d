"""Every hook a plugin may implement. Prefix ``gateway_``; all are documented in
``docs/reference/plugins.md`` and each has a test named after it.

pluggy calls hooks synchronously. Hooks marked *awaitable* may return a coroutine; the
host calls every implementation and awaits each result. No hook uses ``firstresult``.

Registration hooks receive a ``register`` callback built for the calling plugin, so the
host knows who registered what and refuses a duplicate name with an error naming both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from quart import Quart

    from host.auth.principal import Principal
    from host.events import Event
    from host.settings import Settings
    from host.storage import Store

PROJECT = "agent_gateway"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


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


@hookspec
def gateway_register_providers(register: Register) -> None:
    """Register model providers for the OpenAI-compatible surface and ``llm`` steps:
    ``register(name, provider)``.

    :param register: ``register(name: str, provider: object)``.

    All implementations are called; a provider name registered twice fails start-up.
    """


@hookspec
def gateway_register_tools(register: Register) -> None:
    """Register tools agents may call: ``register(name, tool)``.

    :param register: ``register(name: str, tool: object)``.

    All implementations are called; a tool name registered twice fails start-up.
    """


@hookspec
def gateway_register_step_kinds(register: Register) -> None:
    """Register pipeline step kinds: ``register(name, step_kind)``.

    :param register: ``register(name: str, step_kind: object)``.

    All implementations are called; a step kind registered twice fails start-up.
    """


@hookspec
def gateway_register_pipelines(register: Register) -> None:
    """Register pipelines defined in code: ``register(pipeline_id, pipeline)``.

    :param register: ``register(pipeline_id: str, pipeline: object)``.

    All implementations are called; a pipeline id registered twice fails start-up.
    """


@hookspec
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
    """


@hookspec
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

    Awaitable. All implementations are called, in registration order; an exception fails
    start-up.
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
def gateway_record_conversation(app: Quart, record: dict[str, Any]) -> Any:
    """Receive one model exchange of a conversation that has a session key (a Responses
    chain, or ``metadata.session_id``), to store it: the contract of the sessions plugin.

    :param app: the Quart app.
    :param record: a JSON-able dict: ``session_key``, ``api`` (``chat`` or
        ``responses``), ``model``, ``response_id``, ``previous_response_id``,
        ``principal``, ``user``, ``metadata``, ``instructions``, ``input`` and ``output``
        (chat messages), ``usage``, ``status``, ``created_ms``.

    Awaitable. Called only for exchanges the model answered, before the answer's end
    reaches the client (before ``[DONE]`` for streams). All implementations are called;
    exceptions are logged and never reach the client.
    """


@hookspec
def gateway_on_event(event: Event) -> Any:
    """Observe every event appended to any stream (audit, metrics, dashboards).

    :param event: the stored event, with ``stream``, ``seq``, ``type``, ``ts_ms`` and
        ``data``.

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

    Awaitable. All implementations are called before the built-in auth mode; the first
    :class:`host.auth.Principal` returned wins; return ``None`` to abstain.
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
