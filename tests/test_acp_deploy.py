"""ACP agents as deployable agents (kind ``acp``, issue 16): ``POST /gateway/deploy``
validates an ``[agents.<id>]``-shaped spec, versions it and new sessions start with it;
``POST /gateway/agents/{id}/stop`` closes the agent's open sessions (their processes
stop) and, stored, refuses new ones with 409 ``agent_stopped`` on every replica until it
is deployed again. With the test ACP agent (``tests/acp_agent.py``), on both stores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.agent_helpers import agent_config, until
from tests.conftest import ADMIN, assert_error, bearer, db_rows, running_app

USER_TOKEN = "test-agent-user-token-0123456789"
USER = bearer(USER_TOKEN)
TOKENS = {"dev": {"token": USER_TOKEN, "gates": ["allow_agent_sessions"]}}


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Any:
    return make_settings(
        auth={"tokens": TOKENS},
        agents={"echo": agent_config(tmp_path)},
        plugins={"agents": {"sweep_seconds": 0.05}},
        events={"poll_seconds": 0.05},
    )


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def open_session(client: Any) -> Any:
    return await client.post("/sessions", json={"agent": "echo"}, headers=USER)


async def opened(client: Any) -> dict[str, Any]:
    response = await open_session(client)
    assert response.status_code == 201, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def pid_of(client: Any, session_id: str) -> int:
    async def started() -> int | None:
        page = await client.get(f"/sessions/{session_id}/events?format=json", headers=USER)
        for event in (await page.get_json())["events"]:
            if event["data"].get("pid"):
                return int(event["data"]["pid"])
        return None

    found: int = await until(started, "the agent's pid")
    return found


async def deploy(client: Any, body: dict[str, Any]) -> Any:
    return await client.post("/gateway/deploy", json=body, headers=ADMIN)


async def test_a_deployed_acp_spec_is_what_new_sessions_start_with(settings, tmp_path, store_url):
    async with running_app(settings) as (_app, client):
        before = await opened(client)
        assert before["workspace"].startswith(str(tmp_path / "work"))
        bad = await deploy(
            client, {"agent_id": "echo", "kind": "acp", "version": "v1", "spec": {"cwd": "x"}}
        )
        assert bad.status_code == 422
        assert assert_error(await bad.get_json(), "validation_failed")["param"] == "spec.command"
        unknown = await deploy(
            client,
            {"agent_id": "echo", "kind": "acp", "version": "v1", "spec": {"comand": ["x"]}},
        )
        assert unknown.status_code == 422
        assert not await db_rows(store_url, "SELECT version FROM deploy_versions")

        spec = agent_config(tmp_path, cwd=str(tmp_path / "deployed"))
        done = await deploy(
            client, {"agent_id": "echo", "kind": "acp", "version": "v1", "spec": spec}
        )
        assert done.status_code == 200, await done.get_data(as_text=True)
        live = await done.get_json()
        assert live["kind"] == "acp" and live["live_version"] == "v1"
        assert live["live_spec"]["cwd"] == str(tmp_path / "deployed")
        after = await opened(client)
        assert after["workspace"].startswith(str(tmp_path / "deployed"))
        # An agent no [agents.<id>] table names can be deployed and then used.
        fresh = await deploy(
            client, {"agent_id": "fresh", "kind": "acp", "version": "v1", "spec": spec}
        )
        assert fresh.status_code == 200, await fresh.get_data(as_text=True)
        made = await client.post("/sessions", json={"agent": "fresh"}, headers=USER)
        assert made.status_code == 201, await made.get_data(as_text=True)


async def test_stopping_an_acp_agent_closes_its_sessions_and_refuses_new_ones(settings, store_url):
    async with running_app(settings) as (_app, client):
        first = await opened(client)
        pid = await pid_of(client, first["id"])
        assert running(pid)
        stopped = await client.post(
            "/gateway/agents/echo/stop", json={"reason": "runaway"}, headers=ADMIN
        )
        assert stopped.status_code == 200, await stopped.get_data(as_text=True)
        body = await stopped.get_json()
        assert body["kind"] == "acp" and body["state"] == "stopped"
        assert body["cancelled"] == [first["id"]]
        assert not running(pid)
        session = await (await client.get(f"/sessions/{first['id']}", headers=USER)).get_json()
        assert session["state"] == "closed"
        refused = await open_session(client)
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "agent_stopped")
        rows = await db_rows(store_url, "SELECT kind, state FROM deploy_agents")
        assert [tuple(r) for r in rows] == [("acp", "stopped")]

    # Stored: another gateway process on the same store refuses too.
    async with running_app(settings) as (_app, client):
        refused = await open_session(client)
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "agent_stopped")
        spec = agent_config(Path(settings.state_dir))
        again = await deploy(
            client, {"agent_id": "echo", "kind": "acp", "version": "v2", "spec": spec}
        )
        assert again.status_code == 200, await again.get_data(as_text=True)
        assert (await open_session(client)).status_code == 201
