"""Remote agents (``[agents.<id>] url``): the test ACP agent served over WebSocket by a
small server in the tests (``tests/acp_ws_agent.py``), used by the gateway like a stdio
agent: from a pipeline's agent step, through ``/sessions``, after its server restarts,
and when it is down. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from acp import PROTOCOL_VERSION, Client, connect_to_agent, text_block
from acp.ws import create_websocket_stream

from tests.acp_ws_agent import AgentServer
from tests.agent_helpers import until
from tests.conftest import ADMIN, assert_error, bearer, db_rows, free_port, running_app
from tests.pipelines_fixtures import write_pipelines

pytestmark = pytest.mark.usefixtures("store_url")

USER_TOKEN = "test-remote-user-token-0123456789"
USER = bearer(USER_TOKEN)
TOKENS = {"dev": {"token": USER_TOKEN, "gates": ["allow_agent_sessions"]}}
AGENT_KEY = "agent-key-0123456789"

PIPELINE = """
from plugins.agents.contract import agent
from plugins.pipelines.definition import Pipeline

ASK = Pipeline(id="ask", steps=[agent("look", "far", "read notes.txt", workspace="pipe")])
"""


def remote(tmp_path: Path, url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "url": url,
        "headers": {"Authorization": {"env": "TEST_REMOTE_AGENT_AUTH"}},
        "cwd": str(tmp_path / "work"),
        "start_timeout_seconds": 20,
        "permission_timeout_seconds": 30,
    }
    config.update(overrides)
    return config


@pytest.fixture(autouse=True)
def agent_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_REMOTE_AGENT_AUTH", f"Bearer {AGENT_KEY}")


async def events_of(client: Any, session_id: str) -> list[dict[str, Any]]:
    page = await client.get(f"/sessions/{session_id}/events?format=json&limit=1000", headers=USER)
    assert page.status_code == 200
    found: list[dict[str, Any]] = (await page.get_json())["events"]
    return found


def said(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["data"]["update"]["content"]["text"]
        for e in events
        if e["type"] == "session.update" and e["data"]["kind"] == "agent_message_chunk"
    )


async def prompt(client: Any, session_id: str, text: str) -> Any:
    response = await client.post(
        f"/sessions/{session_id}/prompt", json={"text": text, "wait": True}, headers=USER
    )
    return response.status_code, await response.get_json()


async def test_a_remote_agent_runs_a_pipeline_step_with_its_secret_header(make_settings, tmp_path):
    directory = write_pipelines(tmp_path, "remote", PIPELINE)
    (tmp_path / "work" / "pipe").mkdir(parents=True)
    (tmp_path / "work" / "pipe" / "notes.txt").write_text("from far away")
    async with AgentServer(require={"Authorization": f"Bearer {AGENT_KEY}"}) as server:
        settings = make_settings(
            auth={"tokens": TOKENS},
            agents={"far": remote(tmp_path, server.url)},
            plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
        )
        async with running_app(settings) as (_app, client):
            started = await client.post("/pipelines/ask/start", json={"input": {}}, headers=ADMIN)
            run_id = (await started.get_json())["runId"]

            async def asked() -> Any:
                page = await (await client.get("/approvals", headers=ADMIN)).get_json()
                return [a for a in page["approvals"] if a["run_id"] == run_id]

            [approval] = await until(asked, "the remote agent's permission request")
            assert approval["source"] == "agent_session"
            decided = await client.post(f"/approvals/{approval['id']}/approve", headers=ADMIN)
            assert decided.status_code == 200

            async def done() -> Any:
                run = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
                return run if run["status"] in ("completed", "failed") else None

            run = await until(done, "the run to end")
            assert run["status"] == "completed", run
            # The agent read the file through the gateway, in the session's workspace.
            assert run["output"]["text"] == "content: from far away"
            events = await client.get(
                f"/sessions/{run['output']['session_id']}/events?format=json&limit=100",
                headers=ADMIN,
            )
            opened = (await events.get_json())["events"][0]
            assert opened["type"] == "session.opened"
            assert opened["data"]["url"] == server.url
            assert opened["data"]["connection_id"].startswith("agent-")
    assert server.handshakes[0]["Authorization"] == f"Bearer {AGENT_KEY}"


async def test_a_remote_session_reconnects_and_loads_after_its_server_restarts(
    make_settings, tmp_path, store_url
):
    server = await AgentServer().start()
    settings = make_settings(
        auth={"tokens": TOKENS},
        agents={"far": remote(tmp_path, server.url, reconnect_max_seconds=0.2)},
    )
    try:
        async with running_app(settings) as (_app, client):
            opened = await client.post("/sessions", json={"agent": "far"}, headers=USER)
            assert opened.status_code == 201, await opened.get_data(as_text=True)
            sid = (await opened.get_json())["id"]
            status, _ = await prompt(client, sid, "first")
            assert status == 200

            await server.stop()

            async def exited() -> Any:
                events = await events_of(client, sid)
                return [e for e in events if e["type"] == "session.agent_exited"]

            [gone] = await until(exited, "the session to notice its agent is gone")
            assert "remote agent 'far'" in gone["data"]["reason"]
            record = await (await client.get(f"/sessions/{sid}", headers=USER)).get_json()
            assert record["attached"] is False

            server = await AgentServer(port=server.port).start()
            status, answer = await prompt(client, sid, "history")
            assert status == 200, answer
            events = await events_of(client, sid)
            resumed = [e for e in events if e["type"] == "session.resumed"]
            assert resumed[0]["data"]["loaded"] is True
            assert said(events).endswith("1 prompts before")
            assert server.connections == 1
    finally:
        await server.stop()
    rows = await db_rows(store_url, f"SELECT state FROM agents_sessions WHERE id = '{sid}'")
    assert rows == [("idle",)]


async def test_a_remote_agent_that_is_down_is_a_clear_error_naming_it(
    make_settings, tmp_path, store_url
):
    url = f"ws://127.0.0.1:{free_port()}/acp"
    settings = make_settings(
        auth={"tokens": TOKENS},
        agents={"far": remote(tmp_path, url, start_timeout_seconds=0.5)},
    )
    async with running_app(settings) as (_app, client):
        response = await client.post("/sessions", json={"agent": "far"}, headers=USER)
        assert response.status_code == 502
        error = assert_error(await response.get_json(), "agent_start_failed")
        assert "agent 'far' could not start" in error["message"]
        assert f"{url} is unreachable" in error["message"]
    assert await db_rows(store_url, "SELECT COUNT(*) FROM agents_sessions") == [(0,)]


async def test_a_remote_agent_refusing_the_handshake_is_not_retried(make_settings, tmp_path):
    async with AgentServer(require={"Authorization": "Bearer something-else"}) as server:
        settings = make_settings(
            auth={"tokens": TOKENS}, agents={"far": remote(tmp_path, server.url)}
        )
        async with running_app(settings) as (_app, client):
            response = await client.post("/sessions", json={"agent": "far"}, headers=USER)
            assert response.status_code == 502
            error = assert_error(await response.get_json(), "agent_start_failed")
            assert "refused the connection with HTTP 401" in error["message"]
    assert len(server.handshakes) == 1


class Editor:
    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        if update.session_update == "agent_message_chunk":
            self.chunks.append(update.content.text)


async def test_an_editor_at_acp_reaches_a_remote_agent(live_server, tmp_path):
    async with AgentServer(require={"Authorization": f"Bearer {AGENT_KEY}"}) as agent:
        server = live_server(
            config={
                "auth": {"tokens": TOKENS},
                "agents": {"far": remote(tmp_path, agent.url)},
            },
            env={"TEST_REMOTE_AGENT_AUTH": f"Bearer {AGENT_KEY}"},
        )
        editor = Editor()
        url = server.url.replace("http://", "ws://") + "/acp?agent=far"
        transport = await create_websocket_stream(
            url, headers={"Authorization": f"Bearer {USER_TOKEN}"}
        )
        conn = connect_to_agent(cast(Client, editor), transport)
        try:
            await conn.initialize(protocol_version=PROTOCOL_VERSION)
            sid = (await conn.new_session(cwd="/x", mcp_servers=[])).session_id
            answer = await conn.prompt(session_id=sid, prompt=[text_block("from afar")])
            assert answer.stop_reason == "end_turn"

            async def done() -> bool:
                return "".join(editor.chunks).endswith("(done)")

            await until(done, "the remote agent's answer")
            assert "".join(editor.chunks) == "echo: from afar (done)"
        finally:
            await transport.close()
    assert agent.connections == 1
