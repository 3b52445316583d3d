"""The ``gateway`` command line: serve, config, plugins, openapi, db; plugins add more."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from host import __version__
from host.settings import (
    CONFIG_FILENAME,
    DEFAULT_CONFIG_TEXT,
    ConfigError,
    Settings,
    literal_secret_warnings,
    load_settings,
    startup_problems,
)

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"config file (default: $GATEWAY_CONFIG, else ./{CONFIG_FILENAME} if present)",
)


def _load(config_path: str | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config_path, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(__version__, prog_name="agent-gateway")
def cli() -> None:
    """agent-gateway: the HTTP front door for AI agent pipelines."""


@cli.command()
@config_option
@click.option("--bind", help="HOST:PORT to listen on (default 127.0.0.1:8787)")
@click.option("--workers", type=click.IntRange(1, 64), help="worker processes")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key")
@click.option("--access-log/--no-access-log", default=None, help="log every request")
@click.option("--state-dir", type=click.Path(file_okay=False), help="state directory")
def serve(
    config_path: str | None,
    bind: str | None,
    workers: int | None,
    certfile: str | None,
    keyfile: str | None,
    access_log: bool | None,
    state_dir: str | None,
) -> None:
    """Serve the gateway (HTTP/1.1 and HTTP/2 on one port; TLS with --certfile/--keyfile)."""
    from host.plugins import PluginError
    from host.serve import serve as run

    server = {
        k: v
        for k, v in {
            "bind": bind,
            "workers": workers,
            "certfile": str(Path(certfile).resolve()) if certfile else None,
            "keyfile": str(Path(keyfile).resolve()) if keyfile else None,
            "access_log": access_log,
        }.items()
        if v is not None
    }
    overrides: dict[str, Any] = {"server": server} if server else {}
    if state_dir:
        overrides["state_dir"] = str(Path(state_dir).resolve())
    settings = _load(config_path, **overrides)
    try:
        code = run(settings)
    except PluginError as exc:
        # A broken plugin is a configuration problem: say which, without a traceback.
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


@cli.group()
def config() -> None:
    """Write, show and check gateway.toml."""


@config.command("init")
@click.option("--path", default=CONFIG_FILENAME, show_default=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="overwrite an existing file")
def config_init(path: str, force: bool) -> None:
    """Write a commented gateway.toml with the defaults."""
    target = Path(path)
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; use --force to overwrite it")
    target.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
    click.echo(f"wrote {target}")


@config.command("show")
@config_option
def config_show(config_path: str | None) -> None:
    """Print the effective configuration (file + overrides + env), secrets masked."""
    from host.config_admin import config_sources
    from host.config_mask import masked_config
    from host.plugins import PluginError, PluginHost

    settings = _load(config_path)
    try:
        declared = list(PluginHost(settings).collect("gateway_register_secret_keys", "secret key"))
    except PluginError as exc:
        # Still masked by key names and URLs; only the plugins' own declarations are missing.
        click.echo(f"warning: {exc}; secrets the plugins declare may show", err=True)
        declared = []
    shown = {"config": masked_config(settings, declared), "sources": config_sources(settings)}
    click.echo(json.dumps(shown, indent=2))


@config.command("check")
@config_option
def config_check(config_path: str | None) -> None:
    """Validate the configuration and the plugins it loads; exit 1 on any error."""
    from host.config_admin import offline_config_problems

    settings = _load(config_path)
    problems = startup_problems(settings) + offline_config_problems(settings)
    for warning in literal_secret_warnings(settings):
        click.echo(f"warning: {warning}", err=True)
    if problems:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)
    source = settings.config_file or "(no config file: defaults)"
    click.echo(f"ok: {source}")


@cli.group("auth")
def auth_group() -> None:
    """Operator accounts of password-session mode."""


@auth_group.command("hash-password")
def hash_password_cmd() -> None:
    """Print a password hash for [auth.users.<name>] password_hash.

    On a terminal it asks twice, without echo; otherwise it reads one line from stdin.
    """
    import getpass

    from host.auth.passwords import MAX_PASSWORD_CHARS, hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise click.ClickException("the passwords do not match")
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise click.ClickException("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise click.ClickException(
            f"logins take passwords of at most {MAX_PASSWORD_CHARS} characters"
        )
    click.echo(hash_password(password))


@cli.command("plugins")
@config_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def plugins_cmd(config_path: str | None, as_json: bool) -> None:
    """Show which plugins load, from where, and which hooks each implements."""
    from host.plugins import PluginError, PluginHost

    try:
        host = PluginHost(_load(config_path))
    except PluginError as exc:
        raise click.ClickException(str(exc)) from exc
    rows = host.plugin_list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "enabled" if row["enabled"] else "disabled"
        origin = row["source"]
        if row["distribution"]:
            origin += f" ({row['distribution']} {row['version']})"
        click.echo(f"{row['name']:<20} {state:<9} {origin:<40} {row['module']}")
        for hook in row["hooks"]:
            click.echo(f"{'':<20} - {hook}")


@cli.command("openapi")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("--output", type=click.Path(dir_okay=False), help="file to write (default stdout)")
def openapi_cmd(fmt: str, output: str | None) -> None:
    """Print the OpenAPI document of the built-in plugins (docs/reference/openapi.yaml)."""
    from host.openapi_doc import render_openapi

    text = render_openapi(fmt)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@cli.group()
def db() -> None:
    """The store: migrate it, check it, prune old data."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: str | None) -> None:
    """Apply the store's pending migrations (the host's and the enabled plugins'), under
    the lock a starting gateway takes: safe while gateways run or start on the store."""
    import asyncio

    settings = _load(config_path)
    migrations = _plugin_migrations(settings)
    store = _store(settings)
    try:
        applied = asyncio.run(_upgrade(store, migrations))
    except Exception as exc:
        raise click.ClickException(_store_failure("cannot upgrade", store, exc)) from exc
    for namespace, version, name in applied:
        click.echo(f"applied {namespace}#{version}: {name}")
    click.echo(f"{len(applied)} migrations applied" if applied else "the store is up to date")


async def _upgrade(store: Any, migrations: list[Any]) -> list[tuple[str, int, str]]:
    await store.open(migrations)
    try:
        return list(store.applied)
    finally:
        await store.close()


@db.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def db_check(config_path: str | None, as_json: bool) -> None:
    """Tell whether the store has every migration of the host and the enabled plugins,
    changing nothing. Exit 0 when it is up to date, 1 when migrations are pending (or the
    store has some this gateway does not know), 2 when it cannot be checked."""
    import asyncio

    try:
        settings = load_settings(config_path)
        migrations = _plugin_migrations(settings)
    except (ConfigError, click.ClickException) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    store = _store(settings)
    try:
        pending, unknown = asyncio.run(_check(store, migrations))
    except Exception as exc:
        click.echo(f"error: {_store_failure('cannot check', store, exc)}", err=True)
        sys.exit(2)
    if as_json:
        report = {
            "store": _display(store),
            "up_to_date": not pending and not unknown,
            "pending": [f"{m.namespace}#{m.version}" for m in pending],
            "unknown": [f"{ns}#{v}" for ns, v in unknown],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for m in pending:
            click.echo(f"pending {m.namespace}#{m.version}: {m.name}")
        for ns, v in unknown:
            click.echo(f"unknown {ns}#{v}: applied by a newer gateway or a plugin not loaded")
        if not pending and not unknown:
            click.echo(f"the store is up to date ({_display(store)})")
        elif pending:
            click.echo(f"{len(pending)} migrations pending: run `gateway db upgrade`")
    if pending or unknown:
        sys.exit(1)


async def _check(store: Any, migrations: list[Any]) -> tuple[list[Any], list[tuple[str, int]]]:
    if store.dialect.name == "sqlite" and not _sqlite_file(store).is_file():
        # Checking must not create the database file.
        from host.storage.migrations import HOST_MIGRATIONS, pending

        return pending(set(), [*HOST_MIGRATIONS, *migrations]), []
    store.connect()
    try:
        result: tuple[list[Any], list[tuple[str, int]]] = await store.migration_status(migrations)
        return result
    finally:
        await store.close()


def _plugin_migrations(settings: Settings) -> list[Any]:
    from host.app import collect_migrations
    from host.plugins import PluginError, PluginHost

    try:
        return collect_migrations(PluginHost(settings))
    except PluginError as exc:
        raise click.ClickException(str(exc)) from exc


def _store(settings: Settings) -> Any:
    from host.storage import Store

    return Store.for_settings(settings)


def _sqlite_file(store: Any) -> Path:
    import sqlalchemy as sa

    return Path(sa.engine.make_url(store.url).database or "")


def _display(store: Any) -> str:
    from host.storage.urls import display_url

    return display_url(store.url)


def _store_failure(what: str, store: Any, exc: BaseException) -> str:
    """One line for a store that failed: what, where (password masked), and why (the
    driver's first line, which names no password)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = reason[0] if reason else ""
    return f"{what} the store at {_display(store)}: {type(exc).__name__}: {detail}"


@db.command("prune")
@config_option
@click.option("--dry-run", is_flag=True, help="count what would be removed; remove nothing")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def db_prune(config_path: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove old data by the [retention] settings, once, and print what went. Safe while
    the gateway runs on the same store."""
    import asyncio

    from host.plugins import PluginError, PluginHost
    from host.storage import sqlite_url

    settings = _load(config_path)
    if settings.storage.url is None and not (settings.state_dir / "gateway.db").is_file():
        click.echo(f"nothing to prune: no store at {sqlite_url(settings.state_dir)}")
        return
    try:
        plugins = PluginHost(settings)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from exc
    report = asyncio.run(_prune_once(settings, plugins, dry_run))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for plugin, kinds in report.removed.items():
            for kind, rows in kinds.items():
                click.echo(f"{plugin:<16} {kind:<16} {rows}")
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {report.total} rows" + (" (dry run)" if dry_run else ""))
    for plugin, error in report.errors.items():
        click.echo(f"error: plugin {plugin!r} failed to prune: {error}", err=True)
    if report.errors:
        sys.exit(1)


async def _prune_once(settings: Settings, plugins: Any, dry_run: bool) -> Any:
    from host.app import collect_migrations
    from host.retention import prune
    from host.storage import Store

    store = Store.for_settings(settings)
    await store.open(collect_migrations(plugins))
    try:
        return await prune(store, plugins, settings, dry_run=dry_run)
    finally:
        await store.close()


def _add_plugin_commands(group: click.Group) -> None:
    from host.plugins import PluginHost

    try:
        host = PluginHost(load_settings())
    except Exception:
        return
    host.call("gateway_register_commands", cli=group)


def main() -> None:
    _add_plugin_commands(cli)
    cli()


if __name__ == "__main__":
    main()
