"""Runtime configuration: reload from disk and validated PATCH write-back.

The overrides file is edited as its own TOML dict (never ``model_dump()`` of the settings,
which would write env-only values and masked secrets into it), validated merged with the
config file, written to a temp file and moved into place with ``os.replace``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel
from quart import Quart

from host.auth.principal import Principal
from host.config_mask import literal_secret_keys
from host.context import GatewayContext, context
from host.errors import GatewayError
from host.secret_refs import SECTION as SECRETS_SECTION
from host.secret_refs import ReferenceRefused, is_reference
from host.secrets import Secret
from host.settings import (
    ConfigError,
    Settings,
    build_settings,
    check_override_references,
    deep_merge,
    merge_patch,
    read_toml,
    startup_problems,
)

# Keys that take effect only after a restart; everything else applies live.
RESTART_KEYS = ("server", "state_dir", "storage", "plugins", "load_plugins")
# Keys inside a live section that are still read only at start.
RESTART_SUBKEYS = {"auth": ("admin_token_file",)}


# What a PATCH may change with ``allow_config_write`` alone. Every other top-level key
# (auth, models, plugins, storage, server, load_plugins, state_dir and any table a
# plugin reads) can grant gates, send a secret to another host or run code at the next
# start, and so can a secret reference anywhere: those need the admin's "*" gate.
OPEN_SECTIONS = ("events",)
ADMIN_GATE = "*"


def secret_keys(app: Quart) -> list[str]:
    """The key patterns plugins declared secret (``gateway_register_secret_keys``)."""
    return list(context(app).registry("secret_keys"))


def flatten(data: Any, prefix: str = "", keep_refs: bool = False) -> dict[str, Any]:
    """Dotted leaf keys; with ``keep_refs`` a secret reference is one leaf."""
    if isinstance(data, dict) and not (keep_refs and is_reference(data)):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}.", keep_refs))
        return out or ({prefix[:-1]: {}} if prefix else {})
    return {prefix[:-1]: data}


def changed_keys(old: Settings, new: Settings) -> list[str]:
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    keys = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    # A secret whose reference stays the same but whose value changed is a change too.
    for path in _secret_paths(old) | _secret_paths(new):
        if _secret_at(old, path) != _secret_at(new, path) or _value(old, path) != _value(new, path):
            keys.add(path)
    return sorted(keys)


def needs_restart(key: str) -> bool:
    section, _, rest = key.partition(".")
    return section in RESTART_KEYS or rest.split(".", 1)[0] in RESTART_SUBKEYS.get(section, ())


def _live_view(old: Settings, new: Settings) -> Settings:
    """The new settings, except for keys that only a restart can apply."""
    keep: dict[str, Any] = {name: getattr(old, name) for name in RESTART_KEYS}
    for section, names in RESTART_SUBKEYS.items():
        kept = {name: getattr(getattr(old, section), name) for name in names}
        keep[section] = getattr(new, section).model_copy(update=kept)
    applied = new.model_copy(update=keep)
    applied.config_file = old.config_file
    applied.cli_overrides = old.cli_overrides
    return applied


async def plugin_config_problems(app: Quart, settings: Settings) -> list[str]:
    """What the plugins' ``gateway_validate_config`` find wrong with ``settings``."""
    problems: list[str] = []
    results = await context(app).plugins.call_async(
        "gateway_validate_config", return_errors=True, app=app, settings=settings
    )
    for plugin, result in results:
        if isinstance(result, Exception):
            problems.append(f"plugin {plugin!r} failed to check the configuration: {result}")
        else:
            problems.extend(str(p) for p in result or ())
    return problems


def offline_config_problems(settings: Settings) -> list[str]:
    """Build the whole app against a scratch state directory (no state, no admin token
    is created) and let the plugins check their sections: duplicate routes, gates and
    kinds, a broken plugin and every ``gateway_validate_config`` problem. For
    ``gateway config check``, and for ``gateway serve`` before it binds."""
    import asyncio

    from host.app import create_app
    from host.plugins import PluginError

    try:
        with tempfile.TemporaryDirectory() as scratch:
            scratch_settings = settings.model_copy(update={"state_dir": Path(scratch)})
            app = create_app(scratch_settings)
            return asyncio.run(plugin_config_problems(app, scratch_settings))
    except PluginError as exc:
        return [str(exc)]


async def _refuse_invalid(app: Quart, new: Settings, suffix: str = "") -> None:
    # Also the live view: server.* only changes on restart, so a new auth mode must suit
    # the bind the process is actually listening on.
    old = context(app).settings
    problems = startup_problems(new) or startup_problems(_live_view(old, new))
    problems = problems or await plugin_config_problems(app, new)
    if problems:
        raise GatewayError(400, "config_invalid", "; ".join(problems) + suffix)


async def apply_settings(app: Quart, new: Settings) -> dict[str, Any]:
    """Put ``new`` in force (already checked by :func:`_refuse_invalid`)."""
    ctx = context(app)
    old = ctx.settings
    keys = changed_keys(old, new)
    applied = _live_view(old, new)
    ctx.settings = applied
    ctx.auth.configure(applied)
    await ctx.auth.reconcile_sessions()
    ctx.hub.heartbeat_seconds = applied.events.heartbeat_seconds
    ctx.hub.poll_seconds = applied.events.poll_seconds
    ctx.hub.page_limit_max = applied.events.page_limit_max
    ctx.hub.subscriber_queue_max = applied.events.subscriber_queue_max
    ctx.hub.slots.limit = applied.events.max_streams_per_principal
    reports = await _plugin_reloads(app, ctx, applied)
    return {
        "applied_live": [k for k in keys if not needs_restart(k)],
        "restart_required": [k for k in keys if needs_restart(k)],
        "plugins": reports,
    }


async def _plugin_reloads(app: Quart, ctx: GatewayContext, settings: Settings) -> dict[str, Any]:
    reports: dict[str, Any] = {}
    results = await ctx.plugins.call_async(
        "gateway_reload", return_errors=True, app=app, settings=settings
    )
    for plugin, result in results:
        if isinstance(result, Exception):
            reports[plugin] = {"status": "error", "error": f"{type(result).__name__}: {result}"}
        else:
            reports[plugin] = result if result is not None else {"status": "ok"}
    return reports


def _reread(settings: Settings, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings as a fresh start would load them: the config file (or, without one, the
    data the app was built from), the overrides file (or ``overrides``), the CLI flags."""
    config_file = settings.config_file
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} no longer exists")
        base = read_toml(config_file)
    else:
        base = settings.base_data
    path = settings.overrides_path
    if overrides is None:
        overrides = read_toml(path) if path.is_file() else {}
    config_dir = config_file.resolve().parent if config_file else None
    if overrides:
        # The allow-list comes from the layers below the overrides, never from them.
        cli = settings.cli_overrides
        allowed = build_settings(deep_merge(base, cli), config_dir, config_file, cli)
        check_override_references(overrides, base, allowed, path)
    layers = deep_merge(deep_merge(base, overrides), settings.cli_overrides)
    new = build_settings(layers, config_dir, config_file, settings.cli_overrides)
    new.cli_overrides = settings.cli_overrides
    new.base_data = base
    return new


async def reload_config(app: Quart) -> dict[str, Any]:
    ctx = context(app)
    try:
        new = _reread(ctx.settings)
    except ConfigError as exc:
        raise GatewayError(
            400, "config_invalid", f"{exc}; the running configuration is unchanged"
        ) from exc
    await _refuse_invalid(app, new, "; the running configuration is unchanged")
    report = await apply_settings(app, new)
    return {"status": "reloaded", **report}


def admin_only_keys(patch: dict[str, Any]) -> list[str]:
    """The keys of ``patch`` only the admin may write: all outside :data:`OPEN_SECTIONS`
    (``null`` removals included) and every secret reference."""
    keys: list[str] = []
    for section, value in patch.items():
        leaves = flatten({section: value}, keep_refs=True)
        keys += [k for k, v in leaves.items() if section not in OPEN_SECTIONS or is_reference(v)]
    return sorted(keys)


def _refuse_literal(path: str) -> GatewayError:
    return GatewayError(
        400,
        "secret_literal_refused",
        f'{path}: secrets are written as {{"env": "NAME"}} or {{"file": '
        '"path"}} references, never in clear',
    )


async def patch_config(app: Quart, patch: dict[str, Any], principal: Principal) -> dict[str, Any]:
    ctx = context(app)
    path = ctx.settings.overrides_path
    admin_only = admin_only_keys(patch)
    if admin_only:
        shown = ", ".join(admin_only[:10]) + (", ..." if len(admin_only) > 10 else "")
        ctx.auth.require_gate(principal, ADMIN_GATE, f"changing {shown}")
    literal = literal_secret_keys(patch, secret_keys(app))
    if literal:
        raise _refuse_literal(literal[0])
    if SECRETS_SECTION in patch:
        raise GatewayError(
            403,
            "config_key_read_only",
            f"{SECRETS_SECTION}: the secret references a PATCH may name are set in the "
            "config file only; nothing was written",
        )
    if "state_dir" in patch:
        # The overrides file lives in the state directory: it cannot move itself.
        raise GatewayError(
            400,
            "config_invalid",
            "state_dir: cannot be changed at runtime; set it in gateway.toml, "
            "GATEWAY_STATE_DIR or --state-dir",
        )
    kept = _removals_kept_below(patch, _lower_layers(ctx.settings))
    if kept:
        # The overrides file lies on top of the config file: a null there cannot take out
        # a key the file sets, and answering "applied" would leave e.g. a token valid.
        raise GatewayError(
            409,
            "config_key_in_file",
            f"{', '.join(kept)}: set in the config file (or a command-line flag), which a "
            "PATCH cannot remove; remove it there and POST /gateway/reload; nothing was "
            "written",
        )
    current = read_toml(path) if path.is_file() else {}
    overrides = _prune_empty(merge_patch(current, patch))
    try:
        tomli_w.dumps(overrides).encode("utf-8")
    except (TypeError, ValueError) as exc:  # e.g. null in a list, or a lone surrogate
        raise GatewayError(
            400, "config_invalid", f"the patch cannot be stored as TOML: {exc}"
        ) from None
    try:
        new = _reread(ctx.settings, overrides)
    except ReferenceRefused as exc:
        raise GatewayError(
            403,
            "secret_reference_not_allowed",
            "; ".join(exc.problems) + "; write the reference in the config file, or allow "
            "it in the config file's [secrets] table; nothing was written",
        ) from None
    except ConfigError as exc:
        raise GatewayError(400, "config_invalid", str(exc)) from exc
    literal = [p for p in _literal_secret_paths(new) if _has_path(overrides, p)]
    if literal:
        raise _refuse_literal(literal[0])
    await _refuse_invalid(app, new, "; nothing was written")
    write_toml_atomic(path, overrides)
    report = await apply_settings(app, new)
    env_shadowed = sorted(k for k in flatten(patch) if _env_name(k) in os.environ)
    return {
        "status": "applied",
        "overrides_file": str(path),
        "env_shadowed": env_shadowed,
        **report,
    }


def _lower_layers(settings: Settings) -> dict[str, Any]:
    """The config file (or the data the app was built from) with the CLI flags on top:
    what lies under the overrides file."""
    config_file = settings.config_file
    if config_file is not None and config_file.is_file():
        base = read_toml(config_file)
    else:
        base = settings.base_data
    return deep_merge(base, settings.cli_overrides)


def _removals_kept_below(patch: dict[str, Any], lower: Any, prefix: str = "") -> list[str]:
    """The keys ``patch`` removes (``null``) that ``lower`` sets all the same."""
    kept: list[str] = []
    if not isinstance(lower, dict):
        return kept
    for key, value in patch.items():
        if value is None and key in lower:
            kept.append(prefix + key)
        elif isinstance(value, dict):
            kept += _removals_kept_below(value, lower.get(key), f"{prefix}{key}.")
    return kept


def _prune_empty(data: dict[str, Any]) -> dict[str, Any]:
    """Drop tables left empty once ``null`` removed their last key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _prune_empty(value)
            if not value:
                continue
        out[key] = value
    return out


def write_toml_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            tomli_w.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _env_name(dotted: str) -> str:
    return "GATEWAY_" + "__".join(p.upper() for p in dotted.split("."))


def _walk_secrets(obj: Any, prefix: str = "") -> dict[str, Secret]:
    out: dict[str, Secret] = {}
    if isinstance(obj, Secret):
        out[prefix[:-1]] = obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            out.update(_walk_secrets(getattr(obj, name), f"{prefix}{name}."))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_walk_secrets(value, f"{prefix}{key}."))
    return out


def _secret_paths(settings: Settings) -> set[str]:
    return set(_walk_secrets(settings))


def _secret_at(settings: Settings, path: str) -> Any:
    secret = _walk_secrets(settings).get(path)
    return secret.ref if secret else None


def _value(settings: Settings, path: str) -> str | None:
    secret = _walk_secrets(settings).get(path)
    return secret.get() if secret else None


def _literal_secret_paths(settings: Settings) -> list[str]:
    return sorted(p for p, s in _walk_secrets(settings).items() if s.is_literal)


def _has_path(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def config_sources(settings: Settings) -> dict[str, Any]:
    env = sorted(k for k in os.environ if k.startswith("GATEWAY_") and k != "GATEWAY_CONFIG")
    # Only the file this configuration was loaded from: an app built from settings in
    # code (embedding, tests) has none, whatever lies in the working directory.
    file = settings.config_file
    return {
        "config_file": str(file) if file else None,
        "overrides_file": str(settings.overrides_path),
        "overrides_present": settings.overrides_path.is_file(),
        "env_keys": env,
    }
