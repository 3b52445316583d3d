"""The gateway as an MCP server: a real ``gateway serve`` driven by the official SDK's
client over streamable HTTP (and by plain HTTP where the transport's edges are the
point: credentials, Origin, session ids). Tools of the registry and pipelines as
``pipeline.<id>``, per caller: gates, ``tools = [...]`` allow-lists of tokens and
accounts, runs owned by the caller, progress notifications, audit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from host.api import context
from host.settings import deep_merge
from plugins.mcp.contract import MCP_STREAM
from tests.conftest import (
    ADMIN,
    READER,
    LiveServer,
    assert_error,
    bearer,
    db_rows,
    running_app,
)
from tests.pipelines_fixtures import write_pipelines
from tests.plugins_for_tests import mcp_server_tools
from tests.plugins_for_tests.kit import fake_distribution, subprocess_env

ALICE, BOB, NARROW, NOPIPES = (
    f"{n}-token-0123456789" for n in ("alice", "bob", "narrow", "nopipes")
)
RUNNER = ["allow_mcp", "allow_pipeline_run"]
SOURCE = """
from pydantic import BaseModel
from plugins.pipelines.definition import Pipeline, approval, code


class Person(BaseModel):
    name: str


def hello(ctx):
    return "hello " + ctx.input["name"]


GREET = Pipeline(
    id="greet", description="Greet someone.", input_model=Person, steps=[code("hello", hello)]
)
PUBLISH = Pipeline(
    id="publish",
    steps=[
        code("draft", lambda ctx: "draft"),
        approval("review", "publish it?"),
        code("publish", lambda ctx: "published"),
    ],
)
"""
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
WIRE = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "Mcp-Protocol-Version": "2025-06-18",
}


@pytest.fixture
def gateway(live_server: Any, tmp_path: Path) -> Any:
    """``gateway(**config)``: a ``gateway serve`` with the test pipelines, the test tools
    plugin, and tokens alice and bob (MCP and pipeline runs), narrow (an allow-list),
    nopipes (MCP only)."""

    def start(env_extra: dict[str, str] | None = None, **config: Any) -> LiveServer:
        directory = write_pipelines(tmp_path, "mcp", SOURCE)
        site = fake_distribution(
            tmp_path / "site", "mcp-tools", {"mcp_tools": mcp_server_tools.__name__}
        )
        tokens = {
            "alice": {"token": ALICE, "gates": RUNNER},
            "bob": {"token": BOB, "gates": RUNNER},
            "narrow": {
                "token": NARROW,
                "gates": RUNNER,
                "tools": ["gateway_pipelines", "gateway_run_*", "pipeline.greet"],
            },
            "nopipes": {"token": NOPIPES, "gates": ["allow_mcp"]},
        }
        base = {
            "auth": {"tokens": tokens},
            "plugins": {"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
        }
        env = {**subprocess_env(site), **(env_extra or {})}
        server: LiveServer = live_server(config=deep_merge(base, config), env=env)
        return server

    return start


@asynccontextmanager
async def mcp(
    server: LiveServer, token: str, mode: Any = "legacy", **options: Any
) -> AsyncIterator[Client]:
    """An SDK client: the initialize handshake with a session (``legacy``), or the
    stateless 2026-07-28 revision (``auto`` finds it by ``server/discover``)."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
    async with Client(transport, mode=mode, **options) as client:
        yield client


async def tool_names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def sessions(server: LiveServer) -> int:
    async with httpx.AsyncClient() as http:
        status = (await http.get(f"{server.url}/gateway/status", headers=ADMIN)).json()
    found: int = status["plugin_status"]["mcp"]["server_sessions"]
    return found


# -- tools: listed and called ----------------------------------------------------------------


async def test_registry_tools_and_pipelines_are_listed_and_called_through_the_sdk(gateway):
    server = gateway()
    async with mcp(server, ALICE) as client:
        names = await tool_names(client)
        assert {"http_fetch", "gateway_run_status", "whoami", "danger.delete"} <= names
        assert {"pipeline.greet", "pipeline.publish"} <= names
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert listed["pipeline.greet"].input_schema["required"] == ["name"]
        assert listed["pipeline.greet"].description == "Greet someone."

        who = await client.call_tool("whoami", {})
        assert not who.is_error
        assert who.structured_content == {"kind": "mcp", "owner": "token:alice"}

        refused = await client.call_tool("http_fetch", {"url": "http://nowhere.example/"})
        assert refused.is_error
        assert refused.content[0].text.startswith("tool_refused:")  # type: ignore[union-attr]

        bad_args = await client.call_tool("whoami", {"extra": 1})
        assert bad_args.is_error
        assert "invalid_tool_args" in bad_args.content[0].text  # type: ignore[union-attr]

        with pytest.raises(MCPError, match="Unknown tool: no_such_tool"):
            await client.call_tool("no_such_tool", {})


HELD = {"tools": {"approval": {"always": ["danger.*"]}}}


async def _decide_when_listed(server: LiveServer, decision: str) -> dict[str, Any]:
    """Wait for the held call's approval in ``GET /approvals`` (alice's own), then decide
    it as the admin; the approval as listed."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        deadline = time.monotonic() + 30
        while True:
            listed = (await http.get("/approvals", headers=bearer(ALICE))).json()["approvals"]
            if listed:
                break
            assert time.monotonic() < deadline, "no approval was requested"
            await asyncio.sleep(0.05)
        [approval] = listed
        decided = await http.post(
            f"/approvals/{approval['id']}/{decision}", json={"reason": "checked"}, headers=ADMIN
        )
        assert decided.status_code == 200, decided.text
    found: dict[str, Any] = approval
    return found


async def test_a_held_call_waits_with_progress_and_runs_once_when_approved(
    gateway, live_server, tmp_path
):
    deletions = tmp_path / "deletions.log"
    server = gateway(**HELD, env_extra={"GATEWAY_TEST_DELETIONS": str(deletions)})
    updates: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(message)

    async with mcp(server, ALICE) as client:
        call = asyncio.create_task(
            client.call_tool("danger.delete", {"target": "prod"}, progress_callback=on_progress)
        )
        approval = await _decide_when_listed(server, "approve")
        result = await asyncio.wait_for(call, 60)
    assert not result.is_error, result
    assert result.content[0].text == "deleted prod"  # type: ignore[union-attr]
    assert deletions.read_text() == "prod\n"  # exactly once
    assert approval["source"] == "tool_call"
    assert any(approval["id"] in (m or "") for m in updates)


async def test_a_denied_call_runs_nothing_and_says_who_denied(gateway, tmp_path):
    deletions = tmp_path / "deletions.log"
    server = gateway(**HELD, env_extra={"GATEWAY_TEST_DELETIONS": str(deletions)})
    async with mcp(server, ALICE) as client:
        call = asyncio.create_task(client.call_tool("danger.delete", {"target": "prod"}))
        await _decide_when_listed(server, "deny")
        result = await asyncio.wait_for(call, 60)
    assert result.is_error
    assert result.content[0].text.startswith("approval_denied:")  # type: ignore[union-attr]
    assert not deletions.exists()


# -- allow-lists and gates -------------------------------------------------------------------


async def test_a_token_allow_list_limits_what_it_lists_and_calls_as_if_the_rest_were_absent(
    gateway,
):
    server = gateway()
    async with mcp(server, NARROW) as client:
        names = await tool_names(client)
        assert names == {"gateway_pipelines", "gateway_run_status", "pipeline.greet"}
        ok = await client.call_tool("gateway_pipelines", {})
        assert not ok.is_error
        for forbidden in ("whoami", "pipeline.publish"):
            with pytest.raises(MCPError) as refused:
                await client.call_tool(forbidden, {})
            with pytest.raises(MCPError) as absent:
                await client.call_tool(f"{forbidden}_absent", {})
            # The same answer as for a tool that does not exist.
            assert refused.value.code == absent.value.code
            assert refused.value.message == f"Unknown tool: {forbidden}"


async def test_the_stateless_2026_revision_serves_the_same_tools_to_the_same_callers(gateway):
    server = gateway()
    async with mcp(server, NARROW, mode="auto") as client:
        assert client.protocol_version == "2026-07-28"
        assert await tool_names(client) == {
            "gateway_pipelines",
            "gateway_run_status",
            "pipeline.greet",
        }
        result = await client.call_tool("pipeline.greet", {"name": "Ada"})
        assert result.content[0].text == "hello Ada"  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="Unknown tool: whoami"):
            await client.call_tool("whoami", {})
    async with mcp(server, ALICE, mode="auto") as client:
        who = await client.call_tool("whoami", {})
    assert who.structured_content == {"kind": "mcp", "owner": "token:alice"}


async def test_an_account_allow_list_applies_to_its_sessions(gateway):
    password = "carol-password-0123456789"
    server = gateway(
        auth={
            "mode": "password-session",
            "users": {"carol": {"password": password, "gates": RUNNER, "tools": ["who*"]}},
        }
    )
    async with httpx.AsyncClient() as http:
        login = await http.post(
            f"{server.url}/gateway/auth/session", json={"user": "carol", "password": password}
        )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    async with mcp(server, token) as client:
        assert await tool_names(client) == {"whoami"}
        who = await client.call_tool("whoami", {})
        assert who.structured_content == {"kind": "mcp", "owner": "session:carol"}
        with pytest.raises(MCPError, match=r"Unknown tool: pipeline\.greet"):
            await client.call_tool("pipeline.greet", {"name": "x"})
    async with mcp(server, ALICE) as client:  # the token next to it is unrestricted
        assert "pipeline.greet" in await tool_names(client)


async def test_pipelines_need_the_run_gate_and_mcp_needs_its_gate(gateway):
    server = gateway()
    async with mcp(server, NOPIPES) as client:
        names = await tool_names(client)
        assert "whoami" in names
        assert not [n for n in names if n.startswith("pipeline.")]
        with pytest.raises(MCPError, match=r"Unknown tool: pipeline\.greet"):
            await client.call_tool("pipeline.greet", {"name": "x"})
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{server.url}/mcp", json=INIT, headers={**WIRE, **READER})
    assert refused.status_code == 403
    assert "allow_mcp" in assert_error(refused.json(), "policy_gate_denied")["message"]
    assert "mcp-session-id" not in refused.headers
    assert await sessions(server) == 0


# -- the transport's edges: credentials, Origin, sessions ---------------------------------------


async def test_a_missing_or_invalid_token_is_refused_before_any_session(gateway):
    server = gateway()
    async with httpx.AsyncClient() as http:
        for headers in ({}, bearer("not-a-token")):
            answer = await http.post(f"{server.url}/mcp", json=INIT, headers={**WIRE, **headers})
            assert answer.status_code == 401
            assert_error(answer.json(), "unauthorized")
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "mcp-session-id" not in answer.headers
        get = await http.get(f"{server.url}/mcp", headers={"Accept": "text/event-stream"})
        assert get.status_code == 401
    assert await sessions(server) == 0


async def test_a_foreign_origin_or_host_is_refused_against_dns_rebinding(gateway):
    server = gateway()
    async with httpx.AsyncClient() as http:
        origin = await http.post(
            f"{server.url}/mcp",
            json=INIT,
            headers={**WIRE, **ADMIN, "Origin": "http://evil.example"},
        )
        assert origin.status_code == 403
        assert_error(origin.json(), "origin_not_allowed")
        host = await http.post(
            f"{server.url}/mcp", json=INIT, headers={**WIRE, **ADMIN, "Host": "evil.example"}
        )
        assert host.status_code == 403
        assert_error(host.json(), "host_not_allowed")
        same = await http.post(
            f"{server.url}/mcp", json=INIT, headers={**WIRE, **ADMIN, "Origin": server.url}
        )
        assert same.status_code == 200
        assert same.headers["mcp-session-id"]


async def _open_session(http: httpx.AsyncClient, server: LiveServer, token: str) -> str:
    opened = await http.post(f"{server.url}/mcp", json=INIT, headers={**WIRE, **bearer(token)})
    assert opened.status_code == 200, opened.text
    session: str = opened.headers["mcp-session-id"]
    ready = await http.post(
        f"{server.url}/mcp",
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={**WIRE, **bearer(token), "Mcp-Session-Id": session},
    )
    assert ready.status_code == 202
    return session


async def _ping(http: httpx.AsyncClient, server: LiveServer, token: str, session: str) -> Any:
    return await http.post(
        f"{server.url}/mcp",
        json={"jsonrpc": "2.0", "id": 7, "method": "ping"},
        headers={**WIRE, **bearer(token), "Mcp-Session-Id": session},
    )


async def test_delete_terminates_the_session(gateway):
    server = gateway()
    async with httpx.AsyncClient() as http:
        session = await _open_session(http, server, ALICE)
        assert (await _ping(http, server, ALICE, session)).status_code == 200
        assert await sessions(server) == 1
        ended = await http.delete(
            f"{server.url}/mcp", headers={**WIRE, **bearer(ALICE), "Mcp-Session-Id": session}
        )
        assert ended.status_code == 200
        assert (await _ping(http, server, ALICE, session)).status_code == 404
    assert await sessions(server) == 0


async def test_a_session_id_used_by_another_principal_is_not_found(gateway):
    server = gateway()
    async with httpx.AsyncClient() as http:
        session = await _open_session(http, server, ALICE)
        stolen = await _ping(http, server, BOB, session)
        assert stolen.status_code == 404
        ended = await http.delete(
            f"{server.url}/mcp", headers={**WIRE, **bearer(BOB), "Mcp-Session-Id": session}
        )
        assert ended.status_code == 404
        # Alice's session is untouched.
        assert (await _ping(http, server, ALICE, session)).status_code == 200


async def test_the_server_stream_takes_one_of_the_callers_stream_slots(gateway):
    server = gateway(events={"max_streams_per_principal": 1})
    async with httpx.AsyncClient(timeout=30) as http:
        session = await _open_session(http, server, ALICE)
        headers = {**WIRE, **bearer(ALICE), "Mcp-Session-Id": session}
        async with http.stream("GET", f"{server.url}/mcp", headers=headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            second = await http.get(f"{server.url}/mcp", headers=headers)
            assert second.status_code == 429
            assert_error(second.json(), "too_many_streams")
        # A refused GET (no session id) gives its slot back at once.
        for _ in range(2):
            refused = await http.get(f"{server.url}/mcp", headers={**WIRE, **bearer(BOB)})
            assert refused.status_code == 400


# -- pipelines as tools ------------------------------------------------------------------------


@pytest.mark.usefixtures("store_url")
async def test_a_pipeline_run_started_through_mcp_is_the_callers(gateway):
    server = gateway()
    async with mcp(server, ALICE) as client:
        result = await client.call_tool("pipeline.greet", {"name": "Ada"})
        invalid = await client.call_tool("pipeline.greet", {"nom": "Ada"})
    assert not result.is_error, result
    assert result.content[0].text == "hello Ada"  # type: ignore[union-attr]
    structured = result.structured_content or {}
    assert structured["status"] == "completed"
    assert structured["output"] == "hello Ada"
    run_id = structured["run_id"]
    assert invalid.is_error
    assert "validation_failed" in invalid.content[0].text  # type: ignore[union-attr]

    async with httpx.AsyncClient() as http:
        mine = await http.get(f"{server.url}/runs/{run_id}", headers=bearer(ALICE))
        assert mine.status_code == 200
        assert mine.json()["trigger"]["type"] == "mcp"
        listed = await http.get(f"{server.url}/runs", headers=bearer(ALICE))
        assert run_id in [r["id"] for r in listed.json()["runs"]]
        theirs = await http.get(f"{server.url}/runs/{run_id}", headers=bearer(BOB))
        assert theirs.status_code == 404
        assert_error(theirs.json(), "run_not_found")
    rows = await db_rows(
        server.store_url, f"SELECT owner, created_by FROM pipelines_runs WHERE id = '{run_id}'"
    )
    assert rows == [("token:alice", "alice")]
    async with mcp(server, BOB) as client:
        status = await client.call_tool("gateway_run_status", {"run_id": run_id})
    assert status.is_error
    assert "run_not_found" in status.content[0].text  # type: ignore[union-attr]


async def test_a_pipeline_runs_events_arrive_as_progress_notifications(gateway):
    server = gateway()
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async with mcp(server, ALICE) as client:
        result = await client.call_tool(
            "pipeline.greet", {"name": "Ada"}, progress_callback=on_progress
        )
    assert not result.is_error
    values = [v for v, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values)
    messages = [m or "" for _, m in seen]
    assert messages[0].startswith("run ") and messages[0].endswith(" started")
    assert "step.started hello" in messages
    assert messages[-1] == "run.completed"


async def test_a_run_waiting_for_approval_keeps_the_call_open_until_it_is_decided(gateway):
    server = gateway()
    messages: list[str] = []
    waiting = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")
        if message == "run.waiting":
            waiting.set()

    async with mcp(server, ALICE) as client:
        call = asyncio.create_task(
            client.call_tool("pipeline.publish", {}, progress_callback=on_progress)
        )
        await asyncio.wait_for(waiting.wait(), 30)
        assert not call.done()
        run_id = messages[0].split()[1]
        async with httpx.AsyncClient() as http:
            approved = await http.post(
                f"{server.url}/runs/{run_id}/approve", json={"reason": "ok"}, headers=ADMIN
            )
        assert approved.status_code == 200, approved.text
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error, result
    assert result.content[0].text == "published"  # type: ignore[union-attr]
    assert messages.index("run.waiting") < messages.index("run.completed")


async def test_a_run_still_waiting_at_the_timeout_is_an_error_naming_it(gateway):
    server = gateway(mcp={"server": {"pipeline_timeout_seconds": 1}})
    async with mcp(server, ALICE) as client:
        result = await client.call_tool("pipeline.publish", {})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "is still waiting after 1 s" in text
    assert "waiting for an approval at step 'review'" in text


# -- audit -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("store_url")
async def test_every_call_is_audited_refused_ones_included(gateway):
    server = gateway()
    async with mcp(server, NARROW) as client:
        await client.call_tool("gateway_pipelines", {})
        with pytest.raises(MCPError):
            await client.call_tool("whoami", {})
    async with mcp(server, ALICE) as client:
        await client.call_tool("whoami", {"extra": 1})
    rows = await mcp_events(server, 3)
    events = [(t, json.loads(d) if isinstance(d, str) else d) for t, d in rows]
    assert [t for t, _ in events] == ["mcp.tool_call"] * 3
    audits = [
        (d["audit"]["target"], d["audit"]["outcome"], d["audit"]["reason_code"]) for _, d in events
    ]
    assert audits == [
        ("gateway_pipelines", "succeeded", None),
        ("whoami", "refused", "tool_not_found"),
        ("whoami", "failed", "invalid_tool_args"),
    ]
    assert [d["owner"] for _, d in events] == ["token:narrow", "token:narrow", "token:alice"]
    records = await audit_records(server, 3)
    assert sorted(r["actor"] for r in records) == ["token:alice", "token:narrow", "token:narrow"]
    assert sorted(r["outcome"] for r in records) == ["failed", "refused", "succeeded"]
    # The calls' successful POST /mcp requests are not recorded again (the default
    # exclude_routes); the MCP tool call records say more.
    async with httpx.AsyncClient() as http:
        page = await http.get(
            f"{server.url}/gateway/audit/log", params={"action": "POST /mcp"}, headers=ADMIN
        )
    assert page.status_code == 200 and page.json()["records"] == []


async def mcp_events(server: LiveServer, count: int) -> list[tuple[Any, ...]]:
    """The ``mcp`` stream's rows once there are ``count`` (written off the calls' path)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        rows = await db_rows(
            server.store_url,
            "SELECT type, data FROM gateway_events WHERE stream = 'mcp' ORDER BY seq",
        )
        if len(rows) >= count or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.1)


async def audit_records(server: LiveServer, count: int) -> list[dict[str, Any]]:
    """The audit log's ``mcp.tool_call`` records once there are ``count`` (the audit
    writer commits in the background)."""
    deadline = asyncio.get_running_loop().time() + 30
    async with httpx.AsyncClient() as http:
        while True:
            page = await http.get(
                f"{server.url}/gateway/audit/log",
                params={"action": "mcp.tool_call"},
                headers=ADMIN,
            )
            assert page.status_code == 200, page.text
            records: list[dict[str, Any]] = page.json()["records"]
            if len(records) >= count or asyncio.get_running_loop().time() > deadline:
                return records
            await asyncio.sleep(0.1)


# -- retention ---------------------------------------------------------------------------------


async def test_old_mcp_call_events_are_pruned_like_the_gateways_log(make_settings, store_url):
    day = 86_400_000
    async with running_app(make_settings()) as (app, _client):
        hub = context(app).hub
        for n in range(3):  # what each call leaves (the calls' own path is tested above)
            await hub.publish(MCP_STREAM, "mcp.tool_call", {"tool": f"t{n}"})
        retention = context(app).retention
        assert retention is not None
        soon = await retention.prune(now=int(time.time() * 1000) + day)
        assert soon.removed["mcp"] == {"events": 0}
        later = await retention.prune(now=int(time.time() * 1000) + 31 * day)
        assert later.removed["mcp"] == {"events": 3}
    rows = await db_rows(store_url, "SELECT seq FROM gateway_events WHERE stream = 'mcp'")
    assert rows == []
