"""The ``gateway`` command line, run as a user would: a subprocess in a scratch folder."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import click
import httpx
from click.testing import CliRunner

from host import __version__
from host.cli import cli
from host.plugins import PluginHost
from host.settings import DEFAULT_CONFIG_TEXT, build_settings
from tests.conftest import free_port
from tests.conftest import gateway_cli as gateway
from tests.plugins_for_tests.kit import fake_distribution

REPO = Path(__file__).resolve().parents[1]
CLI_DOC = REPO / "docs" / "reference" / "cli.md"


# -- gateway config ----------------------------------------------------------------------------


def test_config_init_writes_a_file_that_config_check_accepts(tmp_path):
    init = gateway("config", "init", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    assert init.stdout == "wrote gateway.toml\n"
    assert (tmp_path / "gateway.toml").read_text() == DEFAULT_CONFIG_TEXT
    # Every value it writes is the default.
    written = build_settings(tomllib.loads(DEFAULT_CONFIG_TEXT))
    assert written.model_dump() == build_settings({}).model_dump()

    check = gateway("config", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout == f"ok: {tmp_path / 'gateway.toml'}\n"
    assert check.stderr == ""
    assert not (tmp_path / ".gateway").exists()  # checking creates no state


def test_config_init_refuses_to_overwrite_without_force(tmp_path):
    mine = tmp_path / "gateway.toml"
    mine.write_text("[events]\nheartbeat_seconds = 5\n")
    refused = gateway("config", "init", cwd=tmp_path)
    assert refused.returncode == 1
    assert "gateway.toml exists; use --force to overwrite it" in refused.stderr
    assert mine.read_text() == "[events]\nheartbeat_seconds = 5\n"

    forced = gateway("config", "init", "--force", "--path", "conf.toml", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "conf.toml").read_text() == DEFAULT_CONFIG_TEXT
    assert mine.read_text() == "[events]\nheartbeat_seconds = 5\n"


def test_config_check_exits_1_with_a_readable_message_on_an_invalid_file(tmp_path):
    cases = {
        "toml.toml": ("[server\nbind = 1", "invalid TOML"),
        "value.toml": ("[server]\nworkers = 0\n", "server.workers"),
        "unknown.toml": ("[events]\nheartbeet_seconds = 3\n", "events.heartbeet_seconds"),
        "loopback.toml": (
            '[auth]\nmode = "localhost-dev"\n[server]\nbind = "0.0.0.0:8787"\n',
            "needs a loopback bind",
        ),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        result = gateway("config", "check", "--config", name, cwd=tmp_path)
        assert result.returncode == 1, name
        assert expected in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_config_check_finds_a_gate_declared_by_two_plugins(tmp_path):
    site = fake_distribution(
        tmp_path / "site",
        "weather-plugins",
        {
            "weather": "tests.plugins_for_tests.weather_gate",
            "weather2": "tests.plugins_for_tests.weather_gate_again",
        },
    )
    result = gateway("config", "check", cwd=tmp_path, site=site)
    assert result.returncode == 1
    assert (
        "error: policy gate 'allow_weather_write' is registered by both plugin 'weather' "
        "and plugin 'weather2'" in result.stderr
    )
    assert not (tmp_path / ".gateway").exists()


# -- gateway plugins ---------------------------------------------------------------------------


def test_gateway_plugins_names_each_plugin_its_source_and_hooks(tmp_path):
    result = gateway("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    hello = next(line for line in lines if line.startswith("hello "))
    assert "enabled" in hello
    assert "entrypoint (gateway-hello-plugin 0.1.0)" in hello
    assert hello.endswith("gateway_hello")
    control = next(line for line in lines if line.startswith("control "))
    assert "builtin" in control
    assert "- gateway_register_migrations" in result.stdout
    assert "- gateway_status" in result.stdout


def test_gateway_plugins_json_shows_disabled_plugins(tmp_path):
    (tmp_path / "gateway.toml").write_text("[plugins.hello]\nenabled = false\n")
    result = gateway("plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["hello"] == {
        "name": "hello",
        "source": "entrypoint",
        "module": "gateway_hello",
        "version": "0.1.0",
        "distribution": "gateway-hello-plugin",
        "enabled": False,
        "hooks": [],
    }
    assert rows["control"]["enabled"] is True
    assert rows["control"]["source"] == "builtin"


def test_gateway_plugins_reports_a_broken_plugin_without_a_traceback(tmp_path):
    site = fake_distribution(
        tmp_path / "site", "typo-plugin", {"typo": "tests.plugins_for_tests.misspelt"}
    )
    result = gateway("plugins", cwd=tmp_path, site=site)
    assert result.returncode == 1
    assert "Error: plugin 'typo' implements unknown hook" in result.stderr
    assert "Traceback" not in result.stderr


# -- gateway serve -----------------------------------------------------------------------------


def test_serve_flags_override_the_config_file(live_server, tmp_path):
    port = free_port()
    state = tmp_path / "flag-state"
    # The config file names another port and state directory; the flags win.
    server = live_server(
        args=["--bind", f"127.0.0.1:{port}", "--state-dir", str(state), "--no-access-log"],
        wait=False,
    )
    url = f"http://127.0.0.1:{port}"
    _wait(url, server)
    running = httpx.get(f"{url}/gateway/config", headers=server.headers, timeout=10).json()
    assert running["config"]["server"]["bind"] == f"127.0.0.1:{port}"
    assert running["config"]["server"]["access_log"] is False
    assert Path(running["config"]["state_dir"]) == state
    assert (state / "gateway.db").is_file()
    assert server.stop() == 0


def _wait(url: str, server: object) -> None:
    import time

    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(server.log())  # type: ignore[attr-defined]


# -- in-process: version, openapi, and the reference page -------------------------------------


def test_version_option_prints_the_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"agent-gateway, version {__version__}\n"


def test_openapi_command_prints_the_document(tmp_path):
    as_json = CliRunner().invoke(cli, ["openapi", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert "/gateway/status" in document["paths"]
    target = tmp_path / "openapi.yaml"
    written = CliRunner().invoke(cli, ["openapi", "--output", str(target)])
    assert written.exit_code == 0, written.output
    assert "/gateway/status:" in target.read_text()


def _commands(group: click.Group, prefix: str = "gateway") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        out.append((path, command))
        if isinstance(command, click.Group):
            out += _commands(command, path)
    return out


def _full_cli() -> click.Group:
    """The ``gateway`` group as a user gets it: the core commands plus every command the
    built-in plugins add through ``gateway_register_commands`` (on a copy, so the
    module's ``cli`` object stays as it is)."""
    full = click.Group("gateway", commands=dict(cli.commands), params=list(cli.params))
    host = PluginHost(build_settings({}), load_entrypoints=False)
    for _plugin, fn in host.impls("gateway_register_commands"):
        fn(cli=full)
    return full


def _sections(text: str) -> dict[str, str]:
    """Each ``gateway ...`` heading of cli.md and the text under it, up to the next heading."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().strip("`")
            current = title if title == "gateway" or title.startswith("gateway ") else None
            if current is not None:
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_cli_reference_documents_every_command_and_option():
    """Every command of the fully loaded CLI (core and built-in plugins) has a heading;
    each option and argument is named under it (or under its group's heading); and every
    ``gateway ...`` heading is a real command."""
    sections = _sections(CLI_DOC.read_text())
    commands = dict(_commands(_full_cli()))
    # Plugin commands are walked too (the core alone would miss them).
    assert {"gateway pipelines", "gateway runs list", "gateway approvals approve"} <= set(commands)
    missing = []
    for path, command in commands.items():
        if path not in sections:
            missing.append(path)
            continue
        ancestors = [" ".join(path.split()[:i]) for i in range(2, len(path.split()) + 1)]
        text = "".join(sections.get(a, "") for a in ancestors)
        for param in command.params:
            if isinstance(param, click.Argument):
                if not _mentions(text, param.human_readable_name):
                    missing.append(f"{path} {param.human_readable_name}")
                continue
            for opt in [*param.opts, *param.secondary_opts]:
                if not _mentions(text, opt):
                    missing.append(f"{path} {opt}")
    for opt in ("--version", "--help"):
        if not _mentions(sections["gateway"], opt):
            missing.append(f"gateway {opt}")
    assert missing == [], f"docs/reference/cli.md lacks {missing}"
    stale = sorted(set(sections) - set(commands) - {"gateway"})
    assert stale == [], f"docs/reference/cli.md documents commands that do not exist: {stale}"


def test_serve_refuses_a_section_its_plugin_finds_broken_before_binding(tmp_path):
    (tmp_path / "gateway.toml").write_text(
        'state_dir = "state"\n[server]\nbind = "127.0.0.1:9"\n'
        "[plugins.openai_compat]\nkeepalive_seconds = 0\n"
        '[plugins.pipelines]\nlease_seconds = "x"\n'
    )
    result = gateway("serve", "--config", "gateway.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "error: plugins.pipelines.lease_seconds: must be a number" in result.stderr
    assert "error: plugins.openai_compat.keepalive_seconds: must be a number" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout  # refused before the banner and the bind
    assert not (tmp_path / "state").exists()  # no state, no admin token
