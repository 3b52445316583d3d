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

from host.context import GatewayContext, context
from host.errors import GatewayError
from host.secrets import Secret
from host.settings import (
    ConfigError,
    Settings,
    build_settings,
    deep_merge,
    find_config_file,
    merge_patch,
    read_toml,
    startup_problems,
)

# Keys that take effect only after a restart; everything else applies live.
RESTART_KEYS = ("server", "state_dir", "storage", "plugins", "load_plugins")


def masked_config(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out or ({prefix[:-1]: {}} if prefix else {})
    return {prefix[:-1]: data}


def changed_keys(old: Settings, new: Settings) -> list[str]:
    a, b = flatten(masked_config(old)), flatten(masked_config(new))
    keys = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    # A secret whose reference stays the same but whose value changed is a change too.
    for path in _secret_paths(old) | _secret_paths(new):
        if _secret_at(old, path) != _secret_at(new, path) or _value(old, path) != _value(new, path):
            keys.add(path)
    return sorted(keys)


def needs_restart(key: str) -> bool:
    return key.split(".", 1)[0] in RESTART_KEYS


def _live_view(old: Settings, new: Settings) -> Settings:
    """The new settings, except for keys that only a restart can apply."""
    keep = {name: getattr(old, name) for name in RESTART_KEYS}
    applied = new.model_copy(update=keep)
    applied.config_file = old.config_file
    applied.cli_overrides = old.cli_overrides
    return applied


async def apply_settings(app: Quart, new: Settings) -> dict[str, Any]:
    ctx = context(app)
    problems = startup_problems(new)
    if problems:
        raise GatewayError(400, "config_invalid", "; ".join(problems))
    old = ctx.settings
    keys = changed_keys(old, new)
    applied = _live_view(old, new)
    ctx.settings = applied
    ctx.auth.configure(applied)
    ctx.hub.heartbeat_seconds = applied.events.heartbeat_seconds
    ctx.hub.poll_seconds = applied.events.poll_seconds
    ctx.hub.page_limit_max = applied.events.page_limit_max
    reports = await _plugin_reloads(app, ctx, applied)
    return {
        "applied_live": [k for k in keys if not needs_restart(k)],
        "restart_required": [k for k in keys if needs_restart(k)],
        "plugins": reports,
    }


async def _plugin_reloads(app: Quart, ctx: GatewayContext, settings: Settings) -> dict[str, Any]:
    reports: dict[str, Any] = {}
    for plugin, fn in ctx.plugins.impls("gateway_reload"):
        try:
            result = fn(app=app, settings=settings)
            if hasattr(result, "__await__"):
                result = await result
            reports[plugin] = result if result is not None else {"status": "ok"}
        except Exception as exc:
            reports[plugin] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
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
    if overrides is None:
        path = settings.overrides_path
        overrides = read_toml(path) if path.is_file() else {}
    layers = deep_merge(deep_merge(base, overrides), settings.cli_overrides)
    config_dir = config_file.resolve().parent if config_file else None
    new = build_settings(layers, config_dir, config_file)
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
    report = await apply_settings(app, new)
    return {"status": "reloaded", **report}


async def patch_config(app: Quart, patch: dict[str, Any]) -> dict[str, Any]:
    ctx = context(app)
    path = ctx.settings.overrides_path
    current = read_toml(path) if path.is_file() else {}
    overrides = merge_patch(current, patch)
    try:
        new = _reread(ctx.settings, overrides)
    except ConfigError as exc:
        raise GatewayError(400, "config_invalid", str(exc)) from exc
    literal = [p for p in _literal_secret_paths(new) if _has_path(overrides, p)]
    if literal:
        raise GatewayError(
            400,
            "secret_literal_refused",
            f'{literal[0]}: secrets are written as {{"env": "NAME"}} or {{"file": '
            '"path"}} references, never in clear',
        )
    problems = startup_problems(new)
    if problems:
        raise GatewayError(400, "config_invalid", "; ".join(problems))
    write_toml_atomic(path, overrides)
    report = await apply_settings(app, new)
    env_shadowed = sorted(k for k in flatten(patch) if _env_name(k) in os.environ)
    return {
        "status": "applied",
        "overrides_file": str(path),
        "env_shadowed": env_shadowed,
        **report,
    }


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
    file = settings.config_file or find_config_file_quiet()
    return {
        "config_file": str(file) if file else None,
        "overrides_file": str(settings.overrides_path),
        "overrides_present": settings.overrides_path.is_file(),
        "env_keys": env,
    }


def find_config_file_quiet() -> Path | None:
    try:
        return find_config_file()
    except ConfigError:
        return None
