"""The tools plugin: ``GET /gateway/tools`` (the registry as described), tool calls from
pipelines through ``host.api.call_tool`` (admitted, checked, timed, scanned, observed),
``GET /gateway/tools/stats`` counted from those calls and kept across restarts, and the
built-in tools (``http_fetch`` against a real loopback server)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from host.api import Tool, ToolCall, Verdict
from host.storage import sqlite_url
from tests.conftest import ADMIN, READER, assert_error, db_rows, running_app
from tests.pipelines_fixtures import pipelines_settings, write_pipelines
from tests.plugins_for_tests.kit import Plugin

pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
from plugins.pipelines.definition import Pipeline, tool

ADD = Pipeline(id="add", steps=[tool("sum", "adder", lambda c: c.input)])
BOOM = Pipeline(id="boom", steps=[tool("bang", "exploder", {}, retries=0)])
SHOUT = Pipeline(id="shout", steps=[tool("say", "echoer", lambda c: c.input)])
FETCH = Pipeline(id="fetch", steps=[tool("get", "http_fetch", lambda c: c.input)])
STATUS = Pipeline(id="status", steps=[tool("look", "gateway_run_status", lambda c: c.input)])
LIST = Pipeline(id="list", steps=[tool("look", "gateway_pipelines", {})])
"""


async def adder(a: int, b: int = 0) -> int:
    """Add two integers.

    Longer text that is not part of the description."""
    return a + b


def exploder() -> None:
    raise RuntimeError("kaboom")


class Blocker:
    async def scan(self, text: str, *, direction: str, context: dict[str, Any]) -> Verdict:
        if context.get("stage") == "tool_output" and "forbidden" in text:
            return Verdict("block", reason="forbidden word")
        if context.get("stage") == "tool_output" and "secret" in text:
            return Verdict("redact", text.replace("secret", "[redacted]"), "secret")
        return Verdict()


def tool_plugin(seen: list[ToolCall] | None = None) -> Plugin:
    def register_tools(register: Any) -> None:
        register("adder", adder)
        register("exploder", exploder)
        register(
            "echoer",
            Tool(
                "Echo a word.",
                {"type": "object", "properties": {"word": {"type": "string"}}},
                lambda word: {"word": word},
            ),
        )

    hooks: dict[str, Any] = {
        "gateway_register_tools": register_tools,
        "gateway_register_safety_scanners": lambda register: register("blocker", Blocker()),
    }
    if seen is not None:
        hooks["gateway_on_tool_call"] = lambda call: seen.append(call)
    return Plugin(**hooks)


@pytest.fixture
def settings(make_settings: Any, tmp_path: Any) -> Any:
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    return pipelines_settings(make_settings, directory)


async def run(client: Any, pipeline: str, data: Any) -> dict[str, Any]:
    started = await client.post(f"/pipelines/{pipeline}/start", json={"input": data}, headers=ADMIN)
    assert started.status_code == 202, await started.get_data(as_text=True)
    run_id = (await started.get_json())["runId"]
    deadline = time.monotonic() + 20
    while True:
        record: dict[str, Any] = await (
            await client.get(f"/runs/{run_id}", headers=ADMIN)
        ).get_json()
        if record["status"] in ("completed", "failed", "cancelled"):
            return record
        assert time.monotonic() < deadline, record
        await asyncio.sleep(0.02)


async def test_tools_lists_every_registered_tool_with_schema_plugin_and_enabled(make_settings):
    settings = make_settings(plugins={"tools": {"disabled": ["exploder"]}})
    async with running_app(settings, extra_plugins=[("mytools", tool_plugin())]) as (_a, client):
        response = await client.get("/gateway/tools", headers=ADMIN)
        assert response.status_code == 200
        tools = {t["name"]: t for t in (await response.get_json())["tools"]}
    assert {"http_fetch", "gateway_pipelines", "gateway_run_status"} <= set(tools)
    assert tools["http_fetch"]["plugin"] == "tools"
    assert tools["http_fetch"]["parameters"]["required"] == ["url"]
    assert tools["adder"] == {
        "name": "adder",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": False,
        },
        "plugin": "mytools",
        "enabled": True,
    }
    assert tools["echoer"]["description"] == "Echo a word."
    assert tools["exploder"]["enabled"] is False


async def test_tools_routes_need_the_tools_read_gate(settings):
    async with running_app(settings) as (_app, client):
        for path in ("/gateway/tools", "/gateway/tools/stats"):
            denied = await client.get(path, headers=READER)
            assert denied.status_code == 403, path
            assert_error(await denied.get_json(), "policy_gate_denied")


async def test_gateway_on_tool_call_sees_every_pipeline_tool_call_and_stats_count_them(
    settings, store_url
):
    seen: list[ToolCall] = []
    plugins = [("mytools", tool_plugin(seen))]
    async with running_app(settings, extra_plugins=plugins) as (_app, client):
        done = await run(client, "add", {"a": 2, "b": 3})
        assert done["status"] == "completed" and done["output"] == 5
        for _ in range(2):
            failed = await run(client, "boom", {})
            assert failed["status"] == "failed"
            assert "kaboom" in str(failed["error"])
        stats = await (await client.get("/gateway/tools/stats", headers=ADMIN)).get_json()
        by_name = {s["name"]: s for s in stats["tools"]}
        # Counted before any flush: this worker's pending calls are part of the answer.
        assert (by_name["adder"]["calls"], by_name["adder"]["errors"]) == (1, 0)
        assert (by_name["exploder"]["calls"], by_name["exploder"]["errors"]) == (2, 2)
        assert by_name["exploder"]["last_error"] == "tool_failed"
        assert (
            by_name["adder"]["p50_ms"] > 0
            and by_name["adder"]["p95_ms"] >= by_name["adder"]["p50_ms"]
        )
        assert by_name["http_fetch"]["calls"] == 0
    adder_calls = [c for c in seen if c.tool == "adder"]
    assert adder_calls[0].ok and adder_calls[0].caller["kind"] == "pipeline"
    assert adder_calls[0].caller["pipeline_id"] == "add"
    assert adder_calls[0].caller["step"] == "sum"
    # Written at shutdown, read back by a fresh process: kept across restarts.
    rows = await db_rows(store_url, "SELECT tool, calls, errors FROM tools_calls ORDER BY tool")
    assert rows == [("adder", 1, 0), ("exploder", 2, 2)]
    async with running_app(settings, extra_plugins=[("mytools", tool_plugin())]) as (_a, client):
        await run(client, "add", {"a": 1})
        stats = await (await client.get("/gateway/tools/stats", headers=ADMIN)).get_json()
        by_name = {s["name"]: s for s in stats["tools"]}
        assert by_name["adder"]["calls"] == 2
        assert by_name["exploder"]["calls"] == 2


async def test_tool_stats_are_written_in_batches_while_running(make_settings, tmp_path, store_url):
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    # Flushed fast: the periodic write is seen while running, not only the shutdown one.
    settings = make_settings(
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "tools": {"flush_seconds": 0.1},
        }
    )
    async with running_app(settings, extra_plugins=[("mytools", tool_plugin())]) as (_a, client):
        await run(client, "add", {"a": 1, "b": 1})
        deadline = time.monotonic() + 10
        while not await db_rows(store_url, "SELECT calls FROM tools_calls WHERE tool = 'adder'"):
            assert time.monotonic() < deadline, "statistics never written"
            await asyncio.sleep(0.05)
        latency = await db_rows(store_url, "SELECT SUM(count) FROM tools_latency")
        assert latency == [(1,)]


async def test_gateway_before_tool_call_refuses_a_disabled_tool_and_bad_args_fail_by_name(
    make_settings, tmp_path
):
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    settings = make_settings(
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "tools": {"disabled": ["echoer"]},
        }
    )
    async with running_app(settings, extra_plugins=[("mytools", tool_plugin())]) as (_a, client):
        disabled = await run(client, "shout", {"word": "hi"})
        assert disabled["status"] == "failed" and "tool_disabled" in str(disabled["error"])
        bad = await run(client, "add", {"a": "two"})
        assert bad["status"] == "failed" and "args.a: must be integer" in str(bad["error"])
        unknown = await run(client, "add", {"a": 1, "c": 2})
        assert "args.c: unknown" in str(unknown["error"])
        stats = await (await client.get("/gateway/tools/stats", headers=ADMIN)).get_json()
        by_name = {s["name"]: s for s in stats["tools"]}
        assert by_name["echoer"]["last_error"] == "tool_disabled"
        assert by_name["adder"]["errors"] == 2


async def test_tool_output_is_scanned_blocked_or_redacted(settings):
    async with running_app(settings, extra_plugins=[("mytools", tool_plugin())]) as (_a, client):
        blocked = await run(client, "shout", {"word": "forbidden"})
        assert blocked["status"] == "failed"
        assert "tool_output_blocked" in str(blocked["error"])
        redacted = await run(client, "shout", {"word": "my secret"})
        assert redacted["output"] == {"word": "my [redacted]"}


class _Pages(BaseHTTPRequestHandler):
    seen: list[str] = []  # the paths asked for, read by the tests

    def do_GET(self) -> None:
        _Pages.seen.append(self.path)
        body = b"x" * 5000 if self.path == "/big" else b"hello from loopback"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pages() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_http_fetch_reads_allowed_hosts_only_and_cuts_the_body(
    make_settings, tmp_path, pages
):
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    settings = make_settings(
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "tools": {"http_fetch": {"allowed_hosts": ["127.0.0.1"], "max_bytes": 1000}},
        }
    )
    async with running_app(settings) as (_app, client):
        fetched = await run(client, "fetch", {"url": f"{pages}/hello"})
        assert fetched["status"] == "completed", fetched
        assert fetched["output"]["status"] == 200
        assert fetched["output"]["text"] == "hello from loopback"
        assert fetched["output"]["truncated"] is False
        big = await run(client, "fetch", {"url": f"{pages}/big"})
        assert len(big["output"]["text"]) == 1000 and big["output"]["truncated"] is True
        other = pages.replace("127.0.0.1", "localhost")
        refused = await run(client, "fetch", {"url": f"{other}/hello"})
        assert refused["status"] == "failed" and "tool_refused" in str(refused["error"])
        scheme = await run(client, "fetch", {"url": "file:///etc/passwd"})
        assert "args.url" in str(scheme["error"])


async def test_gateway_state_tools_report_pipelines_and_run_status(settings):
    async with running_app(settings) as (_app, client):
        listed = await run(client, "list", {})
        ids = [p["id"] for p in listed["output"]["pipelines"]]
        assert {"add", "boom", "status"} <= set(ids)
        looked = await run(client, "status", {"run_id": listed["id"]})
        assert looked["output"] == {
            "run_id": listed["id"],
            "pipeline_id": "list",
            "status": "completed",
            "waiting_for": None,
            "paused_at": None,
        }
        missing = await run(client, "status", {"run_id": "nope"})
        assert "run_not_found" in str(missing["error"])


async def test_tools_config_is_checked_naming_the_key(settings):
    async with running_app(settings) as (_app, client):
        patched = await client.patch(
            "/gateway/config", json={"plugins": {"tools": {"flush_seconds": 0}}}, headers=ADMIN
        )
        assert patched.status_code == 400
        error = assert_error(await patched.get_json(), "config_invalid")
        assert "plugins.tools.flush_seconds" in error["message"]


def test_gateway_serve_writes_tool_stats_on_a_clean_shutdown(live_server, tmp_path, store_url):
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    config = {"plugins": {"pipelines": {"directory": str(directory), "poll_seconds": 0.1}}}
    server = live_server(config=config)
    started = httpx.post(
        f"{server.url}/pipelines/list/run", json={"input": {}}, headers=server.headers, timeout=30
    )
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "completed"
    assert server.stop() == 0  # SIGTERM: drained, the pending count written
    url = store_url if store_url.startswith("postgresql") else sqlite_url(server.state_dir)
    rows = asyncio.run(db_rows(url, "SELECT tool, calls FROM tools_calls"))
    assert rows == [("gateway_pipelines", 1)]
    again = live_server(config={**config, "state_dir": str(server.state_dir)})
    stats = httpx.get(f"{again.url}/gateway/tools/stats", headers=again.headers, timeout=10)
    by_name = {s["name"]: s for s in stats.json()["tools"]}
    assert by_name["gateway_pipelines"]["calls"] == 1


async def test_gateway_run_status_never_shows_another_principals_run(make_settings, tmp_path):
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    bob = "test-bob-token-0123456789"
    settings = make_settings(
        auth={"tokens": {"bob": {"token": bob, "gates": ["allow_pipeline_run"]}}},
        plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
    )
    async with running_app(settings) as (_app, client):
        started = await client.post(
            "/pipelines/list/start", json={"input": {}}, headers={"Authorization": f"Bearer {bob}"}
        )
        assert started.status_code == 202
        theirs = (await started.get_json())["runId"]
        mine = await run(client, "list", {})
        # The admin's run reads its own run, not Bob's: the API's 404, not his status.
        assert (await run(client, "status", {"run_id": mine["id"]}))["status"] == "completed"
        looked = await run(client, "status", {"run_id": theirs})
        assert looked["status"] == "failed" and "run_not_found" in str(looked["error"])
        assert "list" not in str(looked["error"])


async def test_http_fetch_urls_are_scanned_outbound_a_secret_never_reaches_the_host(
    make_settings, tmp_path, pages
):
    directory = write_pipelines(tmp_path, "tools", SOURCE)
    settings = make_settings(
        plugins={
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "tools": {"http_fetch": {"allowed_hosts": ["127.0.0.1"]}},
        }
    )
    key = "sk-proj-" + "A1b2C3d4E5" * 4
    _Pages.seen.clear()
    async with running_app(settings) as (_app, client):
        fetched = await run(client, "fetch", {"url": f"{pages}/hello?token={key}"})
        assert fetched["status"] == "completed", fetched
        assert len(_Pages.seen) == 1 and key not in _Pages.seen[0]
        assert _Pages.seen[0].startswith("/hello?token=")
        policy = {
            "mode": "block",
            "applies_to": ["inbound", "model_output", "outbound_http"],
            "secret_detection": {"enabled": True, "mode": "block"},
        }
        put = await client.put("/gateway/safety/policy", json=policy, headers=ADMIN)
        assert put.status_code == 200, await put.get_data(as_text=True)
        blocked = await run(client, "fetch", {"url": f"{pages}/hello?token={key}"})
        assert blocked["status"] == "failed" and "outbound_blocked" in str(blocked["error"])
        assert len(_Pages.seen) == 1
