"""Every hook, exercised through a real plugin and observed like a client would.

The meta-tests at the top keep the hook set honest (after datasette): each hook, the
host's (``host/hookspecs.py``) and those the built-in plugins declare
(``plugins/<name>/hookspecs.py``), is documented with its exact signature in
docs/reference/plugins.md under its declarer's section, and has a test in tests/ whose
name contains the hook's name.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from quart import Blueprint, Quart

from host import hookspecs
from host.api import Migration, Principal, context, current_principal, public, requires_gate
from host.app import create_app
from host.plugins import HOST, HookDeclaration, PluginHost
from host.settings import Settings, build_settings
from tests.conftest import ADMIN, READER, db_rows, gateway_cli, running_app
from tests.plugins_for_tests.kit import Plugin, fake_distribution

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DOC = REPO / "docs" / "reference" / "plugins.md"

# Every hook of a gateway with all the built-in plugins: the host's and theirs.
DECLARATIONS: dict[str, HookDeclaration] = PluginHost(
    build_settings({}), load_entrypoints=False
).declarations
HOOKS = sorted(DECLARATIONS)


def hook_signature(name: str) -> str:
    """``gateway_x(a: A, b: B) -> R`` as written in its hookspec module."""
    annotations = dict(DECLARATIONS[name].spec.__annotations__)
    returns = annotations.pop("return")
    args = ", ".join(f"{arg}: {ann}" for arg, ann in annotations.items())
    return f"{name}({args}) -> {returns}"


def doc_section(declarer: str) -> str:
    """The ``##`` heading under which docs/reference/plugins.md documents its hooks."""
    return "Hooks of the host" if declarer == HOST else f"Hooks of the {declarer} plugin"


def documented_hooks() -> dict[str, tuple[str, str]]:
    """``{hook: (its ### heading, the ## section it is under)}`` of plugins.md."""
    found: dict[str, tuple[str, str]] = {}
    section = ""
    for line in PLUGINS_DOC.read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("### `gateway_"):
            heading = line.lstrip("#").strip().strip("`")
            found[heading.partition("(")[0]] = (heading, section)
    return found


# -- meta-tests ---------------------------------------------------------------------------


def test_hook_names_are_exactly_the_hookspecs():
    specs = {
        name
        for name, value in vars(hookspecs).items()
        if getattr(value, "agent_gateway_spec", None) is not None
    }
    assert specs == set(hookspecs.HOOK_NAMES)
    assert all(name.startswith("gateway_") for name in DECLARATIONS)
    host_hooks = {n for n, d in DECLARATIONS.items() if d.plugin == HOST}
    assert host_hooks == specs


def test_the_built_in_plugins_declare_their_own_hooks():
    declarers = {name: d.plugin for name, d in DECLARATIONS.items() if d.plugin != HOST}
    assert declarers == {
        "gateway_register_step_kinds": "pipelines",
        "gateway_register_pipelines": "pipelines",
        "gateway_register_providers": "openai_compat",
        "gateway_record_conversation": "openai_compat",
        "gateway_register_memory_rankers": "sessions",
        "gateway_register_dashboard_widgets": "dashboard",
        "gateway_training_batch": "training",
        "gateway_register_job_sources": "jobs",
        "gateway_register_channels": "channels",
        "gateway_register_agent_kinds": "deploy",
        "gateway_admit_run": "pipelines",
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    documented = documented_hooks()
    assert hook in documented, f"docs/reference/plugins.md lacks ### `{hook}(...)`"
    heading, section = documented[hook]
    assert heading == hook_signature(hook)
    assert section == doc_section(DECLARATIONS[hook].plugin)


def test_every_documented_hook_exists():
    assert sorted(documented_hooks()) == HOOKS


@functools.cache
def _test_names() -> frozenset[str]:
    names = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test_"):
                    names.add(node.name)
    return frozenset(names)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_named_after_it(hook):
    assert any(hook in name for name in _test_names()), f"no test_*{hook}* in tests/"


# -- registration hooks -------------------------------------------------------------------


def _family_plugin() -> Plugin:
    """Three routes: public, authenticated, gated; the message comes from the settings."""
    bp = Blueprint("family", __name__, url_prefix="/family")

    def register_blueprints(register: Any, settings: Settings) -> None:
        word = settings.plugin_section("family").get("word", "plain")

        @bp.get("/open")
        @public
        async def open_() -> dict[str, str]:
            return {"word": word}

        @bp.get("/member")
        async def member() -> dict[str, str]:
            return {"member": current_principal().name}

        @bp.post("/admin")
        @requires_gate("allow_family_admin")
        async def admin() -> tuple[dict[str, str], int]:
            return {"done": "yes"}, 201

        register(bp)

    def register_gates(register: Any) -> None:
        register("allow_family_admin", "administer the family")

    return Plugin(
        gateway_register_blueprints=register_blueprints,
        gateway_register_policy_gates=register_gates,
    )


async def test_gateway_register_blueprints_serves_routes_default_deny(make_settings):
    settings = make_settings(plugins={"family": {"word": "configured"}})
    async with running_app(settings, extra_plugins=[("family", _family_plugin())]) as (_, client):
        opened = await client.get("/family/open")
        assert opened.status_code == 200
        assert await opened.get_json() == {"word": "configured"}

        anonymous = await client.get("/family/member")
        assert anonymous.status_code == 401
        assert (await anonymous.get_json())["error"]["code"] == "unauthorized"
        member = await client.get("/family/member", headers=READER)
        assert await member.get_json() == {"member": "reader"}

        plugins = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        assert sorted(plugins["registrations"]["family"]["routes"]) == [
            "GET /family/member",
            "GET /family/open",
            "POST /family/admin",
        ]
        info = {p["name"]: p for p in plugins["plugins"]}["family"]
        assert info["source"] == "instance"
        assert "gateway_register_blueprints" in info["hooks"]


async def test_gateway_register_policy_gates_declares_an_enforced_gate(make_settings):
    token = {"token": "family-token-0123456789", "gates": ["allow_family_admin"]}
    settings = make_settings(auth={"tokens": {"family": token}})
    family = {"Authorization": "Bearer family-token-0123456789"}
    async with running_app(settings, extra_plugins=[("family", _family_plugin())]) as (_, client):
        plugins = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        assert plugins["gates"]["allow_family_admin"] == {
            "description": "administer the family",
            "plugin": "family",
        }
        assert plugins["registrations"]["family"]["policy_gates"] == ["allow_family_admin"]

        denied = await client.post("/family/admin", headers=READER)
        assert denied.status_code == 403
        assert (await denied.get_json())["error"]["code"] == "policy_gate_denied"
        assert (await client.post("/family/admin", headers=family)).status_code == 201
        assert (await client.post("/family/admin", headers=ADMIN)).status_code == 201


def _notes_plugin() -> Plugin:
    """A table of its own, created by a migration, written and read over HTTP."""
    notes = sa.Table(
        "notes_test_plugin",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("text", sa.String(200), nullable=False),
    )
    bp = Blueprint("notes", __name__)

    @bp.post("/notes")
    async def add() -> tuple[dict[str, str], int]:
        async with context().store.write() as conn:
            await conn.execute(notes.insert().values(text="remember"))
        return {"ok": "yes"}, 201

    @bp.get("/notes")
    async def read() -> dict[str, list[str]]:
        async with context().store.read() as conn:
            rows = await conn.execute(sa.select(notes.c.text).order_by(notes.c.id))
            return {"notes": [r.text for r in rows]}

    def register_migrations(register: Any) -> None:
        register(Migration.create_tables("notes", 1, "notes table", [notes]))

        def add_column(conn: sa.Connection) -> None:
            conn.execute(sa.text("ALTER TABLE notes_test_plugin ADD COLUMN tag VARCHAR(20)"))

        register(Migration("notes", 2, "tag column", add_column))

    return Plugin(
        gateway_register_migrations=register_migrations,
        gateway_register_blueprints=lambda register: register(bp),
    )


async def test_gateway_register_migrations_table_exists_and_survives_restart(
    make_settings, store_url
):
    settings = make_settings()
    async with running_app(settings, extra_plugins=[("notes", _notes_plugin())]) as (_, client):
        assert (await client.post("/notes", headers=READER)).status_code == 201
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["store"]["schema_versions"]["notes"] == 2
    # The same state directory again: the rows are there and no migration runs twice
    # (a second ALTER TABLE ADD COLUMN would fail start-up).
    async with running_app(settings, extra_plugins=[("notes", _notes_plugin())]) as (app, client):
        assert context(app).store.applied == []
        assert (await client.post("/notes", headers=READER)).status_code == 201
        body = await (await client.get("/notes", headers=READER)).get_json()
        assert body == {"notes": ["remember", "remember"]}
    columns = await db_rows(
        store_url,
        "SELECT name FROM pragma_table_info('notes_test_plugin')"
        if store_url.startswith("sqlite")
        else "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'notes_test_plugin' ORDER BY ordinal_position",
    )
    applied = await db_rows(
        store_url, "SELECT version FROM schema_migrations WHERE namespace = 'notes'"
    )
    assert [c for (c,) in columns] == ["id", "text", "tag"]
    assert sorted(v for (v,) in applied) == [1, 2]


async def test_gateway_register_ws_kinds_answers_a_custom_kind(make_settings):
    async def echo(payload: dict[str, Any], ws: Any) -> dict[str, Any]:
        return {"echo": payload, "principal": ws.principal.name, "request_id": ws.request_id}

    plugin = Plugin(gateway_register_ws_kinds=lambda register: register("echo.request", echo))
    async with running_app(make_settings(), extra_plugins=[("echo", plugin)]) as (_, client):
        plugins = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        assert "echo.request" in plugins["ws_kinds"]
        async with client.websocket("/gateway/ws", headers=READER) as ws:
            frame = {"schema_version": 1, "request_id": "r-1", "kind": "echo.request"}
            await ws.send(json.dumps({**frame, "payload": {"say": "hi"}}))
            answer = json.loads(await asyncio.wait_for(ws.receive(), 10))
            await ws.send(json.dumps({**frame, "kind": "capabilities.request", "payload": {}}))
            caps = json.loads(await asyncio.wait_for(ws.receive(), 10))
    assert answer == {
        "schema_version": 1,
        "request_id": "r-1",
        "kind": "echo.response",
        "payload": {"echo": {"say": "hi"}, "principal": "reader", "request_id": "r-1"},
    }
    assert "echo.request" in caps["payload"]["request_kinds"]
    assert "echo.response" in caps["payload"]["response_kinds"]


async def _registrations(settings: Settings, hook: str, kind: str) -> dict[str, Any]:
    marker = object()

    def register_two(register: Any) -> None:
        register("first", marker)
        register("second", marker)

    plugin = Plugin(**{hook: register_two})
    async with running_app(settings, extra_plugins=[("regs", plugin)]) as (app, client):
        body = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        registry = context(app).registry(kind)
        assert registry["first"] is marker
        assert registry.owners["second"] == "regs"
    return body["registrations"]["regs"]


async def test_gateway_register_providers_are_listed(make_settings):
    regs = await _registrations(make_settings(), "gateway_register_providers", "providers")
    assert regs == {"providers": ["first", "second"]}


async def test_gateway_register_tools_are_listed(make_settings):
    regs = await _registrations(make_settings(), "gateway_register_tools", "tools")
    assert regs == {"tools": ["first", "second"]}


async def test_gateway_register_step_kinds_are_listed(make_settings):
    regs = await _registrations(make_settings(), "gateway_register_step_kinds", "step_kinds")
    assert regs == {"step_kinds": ["first", "second"]}


async def test_gateway_register_pipelines_are_listed(make_settings):
    regs = await _registrations(make_settings(), "gateway_register_pipelines", "pipelines")
    assert regs == {"pipelines": ["first", "second"]}


def test_gateway_register_commands_adds_a_working_cli_command(tmp_path):
    site = fake_distribution(
        tmp_path / "site", "shout-plugin", {"shout": "tests.plugins_for_tests.commands"}
    )
    run = gateway_cli("shout", "hello", "world", cwd=tmp_path, site=site)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "HELLO WORLD!\n"

    # A plugin disabled in the working directory's gateway.toml adds no command.
    (tmp_path / "gateway.toml").write_text("[plugins.shout]\nenabled = false\n")
    off = gateway_cli("shout", "hi", cwd=tmp_path, site=site)
    assert off.returncode == 2
    assert "No such command 'shout'" in off.stderr


# -- lifecycle hooks ----------------------------------------------------------------------


async def test_gateway_startup_awaits_async_implementations_in_order(make_settings, tmp_path):
    log = tmp_path / "startup.log"

    def sync_startup(app: Quart) -> None:
        with log.open("a") as fh:
            fh.write("sync\n")

    async def async_startup(app: Quart) -> None:
        await asyncio.sleep(0)
        # The store is open and migrated by now.
        await context(app).store.set_value("startup.seen", "yes")
        with log.open("a") as fh:
            fh.write("async\n")

    plugins: list[tuple[str, object]] = [
        ("first", Plugin(gateway_startup=sync_startup)),
        ("second", Plugin(gateway_startup=async_startup)),
    ]
    app = create_app(make_settings(), extra_plugins=plugins, load_entrypoints=False)
    assert not log.exists()  # building the app starts nothing
    async with app.test_app():
        assert log.read_text() == "sync\nasync\n"
        assert await context(app).store.get_value("startup.seen") == "yes"


async def test_gateway_startup_exception_fails_startup(make_settings):
    def broken(app: Quart) -> None:
        raise RuntimeError("cannot reach the licence server")

    app = create_app(make_settings(), extra_plugins=[("broken", Plugin(gateway_startup=broken))])
    # The test app reports a failed lifespan start-up with the plugin's message.
    with pytest.raises(Exception, match="licence server"):
        async with app.test_app():
            pass


async def test_gateway_shutdown_is_awaited_before_the_store_closes(make_settings, tmp_path):
    marker = tmp_path / "shutdown.txt"

    def failing(app: Quart) -> None:
        raise RuntimeError("shutdown trouble")

    async def record(app: Quart) -> None:
        await asyncio.sleep(0)
        await context(app).store.set_value("shutdown.recorded", "clean")
        marker.write_text("done")

    settings = make_settings()
    plugins = [
        ("failing", Plugin(gateway_shutdown=failing)),
        ("recorder", Plugin(gateway_shutdown=record)),
    ]
    async with running_app(settings, extra_plugins=plugins):
        assert not marker.exists()
    # The failing plugin was logged, not raised, and did not stop the recorder.
    assert marker.read_text() == "done"
    async with running_app(settings) as (app, _client):
        assert await context(app).store.get_value("shutdown.recorded") == "clean"


async def test_gateway_reload_reports_per_plugin_and_isolates_errors(make_settings):
    seen: list[float] = []

    async def good(app: Quart, settings: Settings) -> dict[str, Any]:
        await asyncio.sleep(0)
        seen.append(settings.events.heartbeat_seconds)
        return {"reloaded": len(seen)}

    def bad(settings: Settings) -> None:
        raise ValueError("templates folder missing")

    def quiet() -> None:
        return None

    plugins = [
        ("bad", Plugin(gateway_reload=bad)),
        ("good", Plugin(gateway_reload=good)),
        ("quiet", Plugin(gateway_reload=quiet)),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (_, client):
        response = await client.post("/gateway/reload", headers=ADMIN)
        assert response.status_code == 200
        report = await response.get_json()
        assert report["plugins"]["good"] == {"reloaded": 1}
        assert report["plugins"]["quiet"] == {"status": "ok"}
        assert report["plugins"]["bad"] == {
            "status": "error",
            "error": "ValueError: templates folder missing",
        }
        # A config PATCH reloads plugins too, with the new settings already in force.
        patched = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": 4}}, headers=ADMIN
        )
        assert patched.status_code == 200
        assert (await patched.get_json())["plugins"]["good"] == {"reloaded": 2}
    assert seen == [15.0, 4.0]


async def test_gateway_on_event_observes_pause_and_resume(make_settings):
    observed: list[tuple[str, int, str, str]] = []

    def watch(event: Any) -> None:
        observed.append((event.stream, event.seq, event.type, event.data["by"]))

    async def watch_async(event: Any) -> None:
        await asyncio.sleep(0)
        observed.append(("async", event.seq, event.type, ""))

    def broken(event: Any) -> None:
        raise RuntimeError("observer bug")

    plugins = [
        ("broken", Plugin(gateway_on_event=broken)),
        ("watch", Plugin(gateway_on_event=watch)),
        ("watch_async", Plugin(gateway_on_event=watch_async)),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (_, client):
        paused = await client.post("/gateway/pause", headers=ADMIN)
        assert paused.status_code == 200  # a failing observer never reaches the publisher
        resumed = await client.post("/gateway/resume", headers=ADMIN)
        assert resumed.status_code == 200
    assert observed == [
        ("gateway", 1, "gateway.paused", "admin"),
        ("async", 1, "gateway.paused", ""),
        ("gateway", 2, "gateway.resumed", "admin"),
        ("async", 2, "gateway.resumed", ""),
    ]


async def test_gateway_actor_from_request_authenticates_a_custom_header(make_settings):
    async def robot_key(request: Any, settings: Settings) -> Principal | None:
        key = request.headers.get("X-Robot-Key")
        expected = settings.plugin_section("robots").get("key")
        if key is None or key != expected:
            return None
        return Principal("robot-7", "robot-key", frozenset({"allow_gateway_control"}))

    settings = make_settings(plugins={"robots": {"key": "beep-boop"}})
    plugins = [("robots", Plugin(gateway_actor_from_request=robot_key))]
    async with running_app(settings, extra_plugins=plugins) as (_, client):
        status = await client.get("/gateway/status", headers={"X-Robot-Key": "beep-boop"})
        assert status.status_code == 200
        principal = (await status.get_json())["auth"]["principal"]
        assert principal == {
            "name": "robot-7",
            "kind": "robot-key",
            "gates": ["allow_gateway_control"],
        }
        # The robot holds its gates and no others.
        assert (
            await client.post("/gateway/pause", headers={"X-Robot-Key": "beep-boop"})
        ).status_code == 200
        denied = await client.patch(
            "/gateway/config",
            json={"events": {"heartbeat_seconds": 3}},
            headers={"X-Robot-Key": "beep-boop"},
        )
        assert denied.status_code == 403
        wrong = await client.get("/gateway/status", headers={"X-Robot-Key": "wrong"})
        assert wrong.status_code == 401
        assert (await wrong.get_json())["error"]["code"] == "unauthorized"
        # Abstaining leaves the built-in token mode in charge.
        assert (await client.get("/gateway/status", headers=READER)).status_code == 200


async def test_gateway_status_sections_appear_in_status(make_settings):
    async def queue_depth(app: Quart) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"depth": 3}

    plugins = [
        ("queue", Plugin(gateway_status=queue_depth)),
        ("plain", Plugin(gateway_status=lambda: {"ok": True})),
        ("silent", Plugin(gateway_status=lambda app: None)),
    ]
    async with running_app(make_settings(), extra_plugins=plugins) as (_, client):
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        ours = {k: v for k, v in status["plugin_status"].items() if k in dict(plugins)}
        assert ours == {"queue": {"depth": 3}, "plain": {"ok": True}}
        async with client.websocket("/gateway/ws", headers=ADMIN) as ws:
            await ws.send(
                json.dumps(
                    {
                        "schema_version": 1,
                        "request_id": "s-1",
                        "kind": "gateway.status.request",
                        "payload": {},
                    }
                )
            )
            answer = json.loads(await asyncio.wait_for(ws.receive(), 10))
    assert answer["kind"] == "gateway.status.response"
    assert answer["payload"]["plugin_status"]["queue"] == {"depth": 3}
