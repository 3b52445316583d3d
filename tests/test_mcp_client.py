"""The gateway as an MCP client: real MCP servers written with the official SDK
(``tests/mcp_test_server.py``), one over stdio (started by the gateway) and one over
streamable HTTP on loopback (a process of the test, with a key header from a secret
reference). Their tools join the registry as ``<server>.<tool>``, pipelines call them,
a tool list change is followed, a server that goes down gives an error naming it (and
the call counts as failed) and is reconnected when it is back."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host.api import Tool
from tests.conftest import (
    ADMIN,
    base_config,
    free_port,
    gateway_cli,
    running_app,
    write_config,
)
from tests.pipelines_fixtures import write_pipelines
from tests.plugins_for_tests.kit import Plugin

pytestmark = pytest.mark.usefixtures("store_url")

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
KEY = "k-0123456789"
SOURCE = """
from plugins.pipelines.definition import Pipeline, tool

ADD = Pipeline(id="add", steps=[tool("sum", "local.add", lambda c: c.input, retries=0)])
GROW = Pipeline(id="grow", steps=[tool("grow", "local.grow", lambda c: c.input, retries=0)])
FAIL = Pipeline(id="fail", steps=[tool("fail", "local.fail", {}, retries=0)])
REMOTE = Pipeline(id="remote", steps=[tool("echo", "remote.echo", lambda c: c.input, retries=0)])
"""


def stdio_server(**extra: Any) -> dict[str, Any]:
    return {"command": [sys.executable, SERVER, "stdio"], **extra}


@pytest.fixture
def settings_with(make_settings: Any, tmp_path: Path) -> Any:
    directory = write_pipelines(tmp_path, "mcp", SOURCE)

    def make(servers: dict[str, Any]) -> Any:
        return make_settings(
            plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
            mcp={"servers": servers},
        )

    return make


class HttpServer:
    """The test MCP server over streamable HTTP, as a process: stopped and started again
    on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, SERVER, "http", str(self.port), KEY])
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, "the MCP test server exited"
                assert time.monotonic() < deadline, "the MCP test server did not listen"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def tools_of(client: Any) -> dict[str, Any]:
    response = await client.get("/gateway/tools", headers=ADMIN)
    assert response.status_code == 200
    return {t["name"]: t for t in (await response.get_json())["tools"]}


async def server_state(client: Any, name: str) -> dict[str, Any]:
    status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
    servers = {s["name"]: s for s in status["plugin_status"]["mcp"]["servers"]}
    return dict(servers[name])


async def run(client: Any, pipeline: str, data: Any) -> dict[str, Any]:
    started = await client.post(f"/pipelines/{pipeline}/start", json={"input": data}, headers=ADMIN)
    assert started.status_code == 202, await started.get_data(as_text=True)
    run_id = (await started.get_json())["runId"]

    async def finished() -> dict[str, Any] | None:
        record: dict[str, Any] = await (
            await client.get(f"/runs/{run_id}", headers=ADMIN)
        ).get_json()
        return record if record["status"] in ("completed", "failed", "cancelled") else None

    found: dict[str, Any] = await until(finished, f"run {run_id}")
    return found


async def stats_of(client: Any) -> dict[str, Any]:
    stats = await (await client.get("/gateway/tools/stats", headers=ADMIN)).get_json()
    return {s["name"]: s for s in stats["tools"]}


async def test_stdio_server_tools_join_the_registry_and_a_pipeline_calls_them(settings_with):
    async with running_app(settings_with({"local": stdio_server()})) as (_app, client):
        tools = await until(
            lambda: _has(client, "local.add"), "the stdio server's tools to be listed"
        )
        assert {"local.add", "local.echo", "local.fail", "local.grow"} <= set(tools)
        add = tools["local.add"]
        assert add["plugin"] == "mcp" and add["description"] == "Add two integers."
        assert add["parameters"]["required"] == ["a", "b"]
        assert (await server_state(client, "local"))["state"] == "up"

        done = await run(client, "add", {"a": 2, "b": 3})
        assert done["status"] == "completed" and done["output"] == {"result": 5}
        # The gateway checks the arguments against the server's schema before calling.
        bad = await run(client, "add", {"a": "two", "b": 3})
        assert bad["status"] == "failed" and "invalid_tool_args" in str(bad["error"])
        failed = await run(client, "fail", {})
        assert failed["status"] == "failed" and "mcp_tool_error" in str(failed["error"])

        stats = await stats_of(client)
        assert (stats["local.add"]["calls"], stats["local.add"]["errors"]) == (2, 1)
        assert stats["local.fail"]["last_error"] == "mcp_tool_error"


async def _has(client: Any, name: str) -> dict[str, Any] | None:
    tools = await tools_of(client)
    return tools if name in tools else None


async def test_a_tool_list_change_announced_by_the_server_reaches_the_registry(settings_with):
    async with running_app(settings_with({"local": stdio_server()})) as (_app, client):
        await until(lambda: _has(client, "local.grow"), "the stdio server's tools")
        assert "local.triple" not in await tools_of(client)
        grown = await run(client, "grow", {"name": "triple"})
        assert grown["status"] == "completed", grown
        tools = await until(lambda: _has(client, "local.triple"), "the announced tool")
        assert tools["local.triple"]["description"] == "Double a number."


async def test_http_server_down_gives_an_error_naming_it_and_is_reconnected(
    settings_with, http_server, monkeypatch
):
    monkeypatch.setenv("MCP_TEST_KEY", KEY)
    remote = {
        "url": http_server.url,
        "headers": {"X-Api-Key": {"env": "MCP_TEST_KEY"}},
        "ping_seconds": 0.5,
        "max_backoff_seconds": 0.5,
    }
    async with running_app(settings_with({"remote": remote})) as (_app, client):
        await until(lambda: _has(client, "remote.echo"), "the HTTP server's tools")
        done = await run(client, "remote", {"text": "hello"})
        assert done["status"] == "completed" and done["output"] == {"result": "hello"}

        http_server.stop()
        failed = await run(client, "remote", {"text": "again"})
        assert failed["status"] == "failed"
        assert "mcp_server_down" in str(failed["error"]) and "'remote'" in str(failed["error"])
        stats = await stats_of(client)
        assert stats["remote.echo"]["errors"] == 1
        assert stats["remote.echo"]["last_error"] == "mcp_server_down"
        assert "remote.echo" in await tools_of(client)  # still listed while down

        async def down() -> bool:
            return (await server_state(client, "remote"))["state"] == "down"

        await until(down, "the server to be seen down")
        http_server.start()

        async def up() -> bool:
            state = await server_state(client, "remote")
            return bool(state["state"] == "up" and state["connects"] >= 2)

        await until(up, "the server to be reconnected")
        again = await run(client, "remote", {"text": "back"})
        assert again["status"] == "completed" and again["output"] == {"result": "back"}


async def test_http_server_without_its_key_is_down_with_the_reason(settings_with, http_server):
    remote = {"url": http_server.url, "headers": {"X-Api-Key": "wrong"}}
    async with running_app(settings_with({"remote": remote})) as (_app, client):

        async def down() -> dict[str, Any] | None:
            state = await server_state(client, "remote")
            return state if state["state"] == "down" else None

        state = await until(down, "the refused server to be down")
        assert state["last_error"] and "remote.echo" not in await tools_of(client)


async def test_a_disabled_server_is_not_started(settings_with):
    settings = settings_with({"local": stdio_server(enabled=False)})
    async with running_app(settings) as (_app, client):
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["plugin_status"]["mcp"]["servers"] == []
        assert not [n for n in await tools_of(client) if n.startswith("local.")]


def test_config_check_names_every_bad_mcp_server_key(
    tmp_path: Path,
) -> None:
    config = base_config(tmp_path / "state")
    config["mcp"] = {
        "server": {"enabled": True, "max_sessions": 0, "pipelines": "yes"},
        "servers": {
            "pipeline": {"command": ["x"]},
            "both": {"command": ["x"], "url": "http://127.0.0.1:1/mcp"},
            "Bad.Name": {"command": ["x"]},
            "slow": {"url": "ftp://nowhere", "timeout_seconds": 0, "colour": "red"},
            "nokey": {"url": "http://127.0.0.1:1/mcp", "headers": {"X": {"env": "NO_SUCH_VAR"}}},
            "ok": {"command": [sys.executable, SERVER, "stdio"]},
        },
    }
    config["auth"]["tokens"]["reader"]["tools"] = ["gateway_*", " "]
    path = write_config(tmp_path / "gateway.toml", config)
    result = gateway_cli("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout + result.stderr
    for expected in (
        "auth.tokens.reader.tools: ' ' is not a tool name or pattern",
        "mcp.server.pipelines: must be true or false",
        "mcp.server.enabled: unknown setting",
        "mcp.server.max_sessions: must be a number from 1 to 1e+06",
        "mcp.servers.pipeline: the name is reserved",
        "mcp.servers.both: set exactly one of command (stdio) and url (streamable HTTP)",
        "mcp.servers.Bad.Name: a server name is 1-64 of a-z",
        "mcp.servers.slow.url: must be an http or https URL",
        "mcp.servers.slow.timeout_seconds: must be a number from 0.1 to 600",
        "mcp.servers.slow.colour: unknown setting",
        "mcp.servers.nokey.headers.X: environment variable NO_SUCH_VAR is not set or empty",
    ):
        assert expected in out, out
    assert "mcp.servers.ok" not in out


async def test_a_server_tool_named_like_another_plugins_tool_is_refused_not_replaced(
    settings_with,
):
    def register_tools(register: Any) -> None:
        register("local.add", Tool("Mine.", {"type": "object"}, lambda: "mine"))

    plugins = [("mine", Plugin(gateway_register_tools=register_tools))]
    async with running_app(settings_with({"local": stdio_server()}), extra_plugins=plugins) as (
        _app,
        client,
    ):

        async def down() -> dict[str, Any] | None:
            state = await server_state(client, "local")
            return state if state["state"] == "down" and state["last_error"] else None

        state = await until(down, "the clashing server to be refused")
        assert "already registered by 'mine'" in state["last_error"]
        tools = await tools_of(client)
        assert tools["local.add"]["plugin"] == "mine" and "local.echo" not in tools
