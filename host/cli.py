"""The ``gateway`` command line: serve, config, plugins, openapi; plugins add more."""

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


def _add_plugin_commands(group: click.Group) -> None:
    from host.plugins import PluginHost

    try:
        host = PluginHost(load_settings())
    except Exception:
        return
    for _plugin, fn in host.impls("gateway_register_commands"):
        fn(cli=group)


def main() -> None:
    _add_plugin_commands(cli)
    cli()


if __name__ == "__main__":
    main()
