"""The plugin host: what loads (and what is never imported), where from, and which
mistakes in a plugin stop start-up with a message that names the plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from quart import Blueprint

from host.api import Migration, public, requires_gate
from host.app import create_app
from host.plugins import PluginError, PluginHost
from tests.conftest import ADMIN, READER, gateway_cli, running_app
from tests.plugins_for_tests.kit import Plugin, fake_distribution, subprocess_env

WRITER_TOKEN = "test-hello-writer-token-0123456789"
WRITER = {"Authorization": f"Bearer {WRITER_TOKEN}"}


def _with_writer(make_settings: Any, **overrides: Any) -> Any:
    token = {"token": WRITER_TOKEN, "gates": ["allow_hello_write"]}
    return make_settings(auth={"tokens": {"writer": token}}, **overrides)


# -- disabled plugins are never imported -----------------------------------------------------


def test_disabled_builtin_plugin_is_never_imported(make_settings):
    module = "tests.plugins_for_tests.never_imported"
    sys.modules.pop(module, None)
    settings = make_settings(plugins={"x": {"enabled": False}})
    host = PluginHost(settings, builtins=(("x", module),), load_entrypoints=False)
    assert module not in sys.modules
    info = {p["name"]: p for p in host.plugin_list()}["x"]
    assert info == {
        "name": "x",
        "source": "builtin",
        "module": module,
        "version": None,
        "distribution": None,
        "enabled": False,
        "hooks": [],
    }


def test_enabled_builtin_plugin_is_imported_and_its_hooks_listed(make_settings):
    module = "tests.plugins_for_tests.status_probe"
    sys.modules.pop(module, None)
    host = PluginHost(make_settings(), builtins=(("probe", module),), load_entrypoints=False)
    assert module in sys.modules
    info = {p["name"]: p for p in host.plugin_list()}["probe"]
    assert info["enabled"] is True
    assert info["hooks"] == ["gateway_status"]


async def test_disabled_control_plugin_takes_its_routes_away(make_settings):
    settings = make_settings(plugins={"control": {"enabled": False}})
    async with running_app(settings) as (_app, client):
        response = await client.get("/health")
        assert response.status_code == 404
        body = await response.get_json()
        assert body["error"]["code"] == "not_found"


# A fresh interpreter per case: the test process may already have imported gateway_hello.
_PROBE = """
import asyncio, json, sys
from host.app import create_app
from host.settings import build_settings

async def main():
    app = create_app(build_settings(json.loads(sys.argv[1])))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.get("/gateway/plugins", headers={"Authorization": sys.argv[2]})
        body = await response.get_json()
    print(json.dumps({"imported": "gateway_hello" in sys.modules, "body": body}))

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("how", "config", "env", "loads"),
    [
        ("enabled by default", {}, {}, True),
        ("[plugins.hello] enabled = false", {"plugins": {"hello": {"enabled": False}}}, {}, False),
        ("load_plugins without it", {"load_plugins": ["someone-else"]}, {}, False),
        ("GATEWAY_LOAD_PLUGINS without it", {}, {"GATEWAY_LOAD_PLUGINS": "someone,else"}, False),
        ("GATEWAY_LOAD_PLUGINS naming it", {}, {"GATEWAY_LOAD_PLUGINS": "other, hello"}, True),
    ],
)
def test_entry_point_plugin_is_imported_only_when_enabled(tmp_path, how, config, env, loads):
    from tests.conftest import ADMIN_TOKEN, base_config

    data = {**base_config(tmp_path / "state"), **config}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(data), f"Bearer {ADMIN_TOKEN}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(**env),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["imported"] is loads, how
    hello = {p["name"]: p for p in out["body"]["plugins"]}["hello"]
    assert hello["enabled"] is loads
    assert hello["source"] == "entrypoint"
    assert hello["distribution"] == "gateway-hello-plugin"
    routes = out["body"]["registrations"].get("hello", {}).get("routes", [])
    assert ("GET /hello/greet" in routes) is loads


# -- the example plugin, loaded through its entry point ----------------------------------------


async def test_hello_plugin_loads_through_its_entry_point(make_settings):
    async with running_app(make_settings(), load_entrypoints=True) as (_app, client):
        response = await client.get("/gateway/plugins", headers=ADMIN)
        assert response.status_code == 200
        body = await response.get_json()
    hello = {p["name"]: p for p in body["plugins"]}["hello"]
    assert hello["source"] == "entrypoint"
    assert hello["distribution"] == "gateway-hello-plugin"
    assert hello["module"] == "gateway_hello"
    assert hello["enabled"] is True
    assert hello["hooks"] == [
        "gateway_register_blueprints",
        "gateway_register_migrations",
        "gateway_register_policy_gates",
        "gateway_status",
    ]
    assert body["gates"]["allow_hello_write"]["plugin"] == "hello"
    assert body["registrations"]["hello"]["policy_gates"] == ["allow_hello_write"]
    assert "POST /hello/guest-book" in body["registrations"]["hello"]["routes"]


async def test_hello_greet_needs_auth_and_reads_its_config_section(make_settings):
    settings = make_settings(plugins={"hello": {"greeting": "good morning"}})
    async with running_app(settings, load_entrypoints=True) as (_app, client):
        denied = await client.get("/hello/greet")
        assert denied.status_code == 401
        assert (await denied.get_json())["error"]["code"] == "unauthorized"
        response = await client.get("/hello/greet", headers=READER)
        assert response.status_code == 200
        assert await response.get_json() == {"message": "good morning, reader"}


async def test_hello_guest_book_write_needs_the_plugins_gate(make_settings):
    async with running_app(_with_writer(make_settings), load_entrypoints=True) as (_app, client):
        denied = await client.post("/hello/guest-book", json={"name": "Ada"}, headers=READER)
        assert denied.status_code == 403
        error = (await denied.get_json())["error"]
        assert error["code"] == "policy_gate_denied"
        assert "allow_hello_write" in error["message"]
        assert (await (await client.get("/hello/guest-book", headers=READER)).get_json()) == {
            "entries": []
        }

        signed = await client.post("/hello/guest-book", json={"name": "Ada"}, headers=WRITER)
        assert signed.status_code == 201
        entry = await signed.get_json()
        assert entry["name"] == "Ada"
        assert entry["signed_by"] == "writer"

        invalid = await client.post("/hello/guest-book", json={"name": ""}, headers=WRITER)
        assert invalid.status_code == 400
        assert "name" in (await invalid.get_json())["error"]["message"]

        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["plugin_status"]["hello"] == {"greetings": 1}
        assert status["store"]["schema_versions"]["hello"] == 1


async def test_hello_guest_book_survives_a_restart(make_settings):
    settings = _with_writer(make_settings)
    async with running_app(settings, load_entrypoints=True) as (_app, client):
        for name in ("Ada", "Grace"):
            response = await client.post("/hello/guest-book", json={"name": name}, headers=WRITER)
            assert response.status_code == 201
    async with running_app(settings, load_entrypoints=True) as (_app, client):
        book = await (await client.get("/hello/guest-book", headers=READER)).get_json()
        assert [e["name"] for e in book["entries"]] == ["Ada", "Grace"]
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["plugin_status"]["hello"] == {"greetings": 2}


# -- mistakes that stop start-up ------------------------------------------------------------


def test_misspelt_hook_fails_startup_naming_the_plugin(make_settings):
    with pytest.raises(PluginError) as err:
        PluginHost(
            make_settings(),
            builtins=(("typo", "tests.plugins_for_tests.misspelt"),),
            load_entrypoints=False,
        )
    message = str(err.value)
    assert "'typo'" in message
    assert "gateway_register_blueprint" in message


def test_misspelt_hook_on_a_plugin_object_fails_create_app(make_settings):
    typo = Plugin(gateway_on_events=lambda event: None)
    with pytest.raises(PluginError, match="plugin 'listener' implements unknown hook"):
        create_app(make_settings(), extra_plugins=[("listener", typo)], load_entrypoints=False)


def test_misspelt_entry_point_plugin_stops_gateway_serve(tmp_path):
    site = fake_distribution(
        tmp_path / "site", "typo-plugin", {"typo": "tests.plugins_for_tests.misspelt"}
    )
    result = gateway_cli("serve", "--state-dir", str(tmp_path / "state"), cwd=tmp_path, site=site)
    assert result.returncode != 0
    assert "plugin 'typo' implements unknown hook 'gateway_register_blueprint'" in result.stderr
    assert "Traceback" not in result.stderr


def _blueprint(name: str, rule: str, gate: str | None = None) -> Blueprint:
    bp = Blueprint(name, __name__)

    async def view() -> dict[str, str]:
        return {"from": name}

    if gate:
        view = requires_gate(gate)(view)
    bp.get(rule)(public(view) if gate is None else view)
    return bp


def _migration(namespace: str, version: int, table: str) -> Migration:
    t = sa.Table(table, sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    return Migration.create_tables(namespace, version, table, [t])


def _registering(hook: str, *args: Any) -> Plugin:
    def impl(register: Any) -> None:
        register(*args)

    return Plugin(**{hook: impl})


DUPLICATES = [
    (
        "route",
        Plugin(gateway_register_blueprints=lambda register: register(_blueprint("a", "/dup"))),
        Plugin(gateway_register_blueprints=lambda register: register(_blueprint("b", "/dup"))),
        "route GET /dup",
    ),
    (
        "route with another variable name",
        Plugin(gateway_register_blueprints=lambda register: register(_blueprint("a", "/x/<id>"))),
        Plugin(gateway_register_blueprints=lambda register: register(_blueprint("b", "/x/<name>"))),
        "route GET /x/<name>",
    ),
    (
        "blueprint name",
        Plugin(gateway_register_blueprints=lambda register: register(_blueprint("same", "/1"))),
        Plugin(gateway_register_blueprints=lambda register: register(_blueprint("same", "/2"))),
        "blueprint 'same'",
    ),
    (
        "policy gate",
        _registering("gateway_register_policy_gates", "allow_x", "first"),
        _registering("gateway_register_policy_gates", "allow_x", "second"),
        "policy gate 'allow_x'",
    ),
    (
        "provider",
        _registering("gateway_register_providers", "third-party-llm", object()),
        _registering("gateway_register_providers", "third-party-llm", object()),
        "provider 'third-party-llm'",
    ),
    (
        "tool",
        _registering("gateway_register_tools", "search", object()),
        _registering("gateway_register_tools", "search", object()),
        "tool 'search'",
    ),
    (
        "step kind",
        _registering("gateway_register_step_kinds", "shell", object()),
        _registering("gateway_register_step_kinds", "shell", object()),
        "step kind 'shell'",
    ),
    (
        "pipeline",
        _registering("gateway_register_pipelines", "nightly", object()),
        _registering("gateway_register_pipelines", "nightly", object()),
        "pipeline 'nightly'",
    ),
    (
        "WebSocket kind",
        _registering("gateway_register_ws_kinds", "ping.request", object()),
        _registering("gateway_register_ws_kinds", "ping.request", object()),
        "WebSocket kind 'ping.request'",
    ),
    (
        "WebSocket kind of a built-in",
        _registering("gateway_register_ws_kinds", "capabilities.request", object()),
        _registering("gateway_register_ws_kinds", "unrelated.request", object()),
        "WebSocket kind 'capabilities.request'",
    ),
    (
        "migration",
        _registering("gateway_register_migrations", _migration("shared", 1, "t_a")),
        _registering("gateway_register_migrations", _migration("shared", 1, "t_b")),
        "migration 'shared#1'",
    ),
]


@pytest.mark.parametrize(
    ("what", "first", "second", "expected"), DUPLICATES, ids=[d[0] for d in DUPLICATES]
)
def test_duplicate_registration_fails_startup_naming_both_plugins(
    make_settings, what, first, second, expected
):
    with pytest.raises(PluginError) as err:
        create_app(
            make_settings(),
            extra_plugins=[("alpha", first), ("beta", second)],
            load_entrypoints=False,
        )
    message = str(err.value)
    assert expected in message, message
    owners = ("'control'", "'alpha'") if "built-in" in what else ("'alpha'", "'beta'")
    for owner in owners:
        assert f"plugin {owner}" in message, message


def test_same_route_under_another_method_is_not_a_duplicate(make_settings, tmp_path):
    def register_get(register: Any) -> None:
        register(_blueprint("reader", "/shared"))

    def register_post(register: Any) -> None:
        bp = Blueprint("writer", __name__)

        @bp.post("/shared")
        @public
        async def write() -> dict[str, str]:
            return {"from": "writer"}

        register(bp)

    app = create_app(
        make_settings(),
        extra_plugins=[
            ("alpha", Plugin(gateway_register_blueprints=register_get)),
            ("beta", Plugin(gateway_register_blueprints=register_post)),
        ],
        load_entrypoints=False,
    )
    assert {r.rule for r in app.url_map.iter_rules()} >= {"/shared"}


def test_route_requiring_an_undeclared_gate_fails_startup(make_settings):
    plugin = Plugin(
        gateway_register_blueprints=lambda register: register(
            _blueprint("guarded", "/guarded", gate="allow_nobody_declared_this")
        )
    )
    with pytest.raises(PluginError) as err:
        create_app(make_settings(), extra_plugins=[("guarded", plugin)], load_entrypoints=False)
    message = str(err.value)
    assert "'guarded'" in message
    assert "allow_nobody_declared_this" in message
    assert "no plugin declares" in message


def test_migration_in_the_host_namespace_is_refused(make_settings):
    plugin = _registering("gateway_register_migrations", _migration("host", 99, "t_host"))
    with pytest.raises(PluginError, match="plugin 'intruder' may not add to the 'host'"):
        create_app(make_settings(), extra_plugins=[("intruder", plugin)], load_entrypoints=False)


def test_two_plugins_with_one_name_fail_startup(make_settings):
    with pytest.raises(PluginError, match="two plugins are named 'control'"):
        create_app(
            make_settings(),
            extra_plugins=[("control", Plugin(gateway_status=lambda: None))],
            load_entrypoints=False,
        )


def test_entry_point_clashing_with_a_builtin_name_fails_startup(tmp_path: Path):
    site = fake_distribution(
        tmp_path / "site", "clash-plugin", {"control": "tests.plugins_for_tests.status_probe"}
    )
    result = gateway_cli("config", "check", cwd=tmp_path, site=site)
    assert result.returncode == 1
    assert "plugin name 'control' from distribution 'clash-plugin' clashes" in result.stderr
