"""The deploy plugin: ``POST /gateway/deploy`` makes an agent live at a version (validated
first, versions and switches stored, rollback by the same route, audited), and
``POST /gateway/agents/{agent_id}/stop`` cancels its running work and refuses new work
(409 ``agent_stopped``) on every replica until it is deployed again."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from host.api import context
from tests.conftest import ADMIN, READER, assert_error, db_rows, running_app
from tests.pipelines_fixtures import write_pipelines
from tests.plugins_for_tests.kit import Plugin

pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
import asyncio

from plugins.pipelines.definition import Pipeline, code, wait


async def nap(ctx):
    await asyncio.sleep(600)


ECHO = Pipeline(id="echo", version="{version}", steps=[code("say", lambda c: c.input)])
SLOW = Pipeline(id="slow", steps=[code("nap", nap)])
ASKS = Pipeline(id="asks", steps=[wait("reply")])
"""


def source(version: str = "1") -> str:
    return SOURCE.replace("{version}", version)


@pytest.fixture
def settings(make_settings: Any, tmp_path: Any) -> Any:
    directory = write_pipelines(tmp_path, "agents", source())
    return make_settings(plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}})


async def until(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def deploy(client: Any, headers: dict[str, str] = ADMIN, **body: Any) -> Any:
    return await client.post("/gateway/deploy", json=body, headers=headers)


async def start(client: Any, pipeline: str) -> Any:
    return await client.post(f"/pipelines/{pipeline}/start", json={"input": {}}, headers=ADMIN)


async def status_of(client: Any, run_id: str) -> str:
    record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
    return str(record["status"])


async def reach(client: Any, run_id: str, status: str) -> None:
    async def reached() -> bool:
        return await status_of(client, run_id) == status

    await until(reached, f"run {run_id} {status}")


async def test_deploy_switches_versions_keeps_history_and_rolls_back(settings, store_url):
    async with running_app(settings) as (app, client):
        first = await deploy(
            client, agent_id="echo", kind="pipeline", version="v1", spec={"model": "echo"}
        )
        assert first.status_code == 200, await first.get_data(as_text=True)
        body = await first.get_json()
        assert (body["live_version"], body["state"], body["previous_version"]) == (
            "v1",
            "live",
            None,
        )
        assert body["live_spec"] == {"pipeline_version": None, "model": "echo", "settings": {}}
        second = await (
            await deploy(
                client,
                agent_id="echo",
                kind="pipeline",
                version="v2",
                spec={"model": "echo", "settings": {"temperature": 0.2}},
                expected_version="v1",
            )
        ).get_json()
        assert (second["live_version"], second["previous_version"]) == ("v2", "v1")
        assert [v["version"] for v in second["versions"] if v["live"]] == ["v2"]
        back = await (await deploy(client, agent_id="echo", rollback_to="v1")).get_json()
        assert (back["live_version"], back["previous_version"]) == ("v1", "v2")
        assert back["live_spec"]["settings"] == {}
        assert [(h["action"], h["from_version"], h["to_version"]) for h in back["history"]] == [
            ("rollback", "v2", "v1"),
            ("deploy", "v1", "v2"),
            ("deploy", None, "v1"),
        ]
        events = await context(app).store.events_after("deploy")
        assert [e.data["audit"]["action"] for e in events] == [
            "agent.deploy",
            "agent.deploy",
            "agent.rollback",
        ]
        assert all(e.data["audit"]["target"] == "echo" for e in events)
        # The same version and spec again is harmless; another spec under it is refused.
        again = await deploy(
            client,
            agent_id="echo",
            kind="pipeline",
            version="v2",
            spec={"model": "echo", "settings": {"temperature": 0.2}},
        )
        assert again.status_code == 200
        clash = await deploy(client, agent_id="echo", kind="pipeline", version="v2", spec={})
        assert clash.status_code == 409
        assert_error(await clash.get_json(), "version_exists")
        stale = await deploy(client, agent_id="echo", rollback_to="v1", expected_version="v1")
        assert stale.status_code == 409
        assert_error(await stale.get_json(), "version_conflict")
    rows = await db_rows(store_url, "SELECT agent_id, live_version, state FROM deploy_agents")
    assert rows == [("echo", "v2", "live")]
    assert len(await db_rows(store_url, "SELECT version FROM deploy_versions")) == 2


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"agent_id": "echo", "kind": "robot", "version": "v1", "spec": {}}, 422, "kind"),
        ({"agent_id": "nope", "kind": "pipeline", "version": "v1", "spec": {}}, 422, "agent_id"),
        (
            {"agent_id": "echo", "kind": "pipeline", "version": "v1", "spec": {"colour": 1}},
            422,
            "spec.colour",
        ),
        (
            {
                "agent_id": "echo",
                "kind": "pipeline",
                "version": "v1",
                "spec": {"pipeline_version": "9"},
            },
            422,
            "spec.pipeline_version",
        ),
        ({"agent_id": "echo", "kind": "pipeline", "version": "v1"}, 400, "spec"),
        ({"agent_id": "echo", "rollback_to": "v1", "version": "v2"}, 400, "rollback_to"),
        ({"agent_id": "bad id!", "kind": "pipeline", "version": "v1", "spec": {}}, 400, "agent_id"),
        (
            {"agent_id": "echo", "kind": "pipeline", "version": "v1", "spec": {}, "extra": 1},
            400,
            "extra",
        ),
    ],
)
async def test_bad_deploys_are_refused_naming_the_field_and_store_nothing(
    settings, store_url, body, status, param
):
    async with running_app(settings) as (_app, client):
        refused = await deploy(client, **body)
        assert refused.status_code == status, await refused.get_data(as_text=True)
        assert param in (await refused.get_json())["error"]["message"]
        missing = await deploy(client, agent_id="echo", rollback_to="v7")
        assert missing.status_code == 404
        assert_error(await missing.get_json(), "version_not_found")
        for path in ("/gateway/deploy", "/gateway/agents/echo/stop"):
            denied = await client.post(path, json={}, headers=READER)
            assert denied.status_code == 403
            assert_error(await denied.get_json(), "policy_gate_denied")
    assert await db_rows(store_url, "SELECT agent_id FROM deploy_agents") == []


async def test_gateway_admit_run_refuses_a_stopped_agents_work_until_it_is_deployed(settings):
    async with running_app(settings) as (app, client):
        running = (await (await start(client, "slow")).get_json())["runId"]
        await reach(client, running, "running")
        other = (await (await start(client, "asks")).get_json())["runId"]
        stopped = await client.post(
            "/gateway/agents/slow/stop", json={"reason": "runaway"}, headers=ADMIN
        )
        assert stopped.status_code == 200, await stopped.get_data(as_text=True)
        body = await stopped.get_json()
        assert (body["state"], body["cancelled"], body["changed"]) == ("stopped", [running], True)
        assert await status_of(client, running) == "cancelled"
        await reach(client, other, "waiting")  # another agent's work goes on
        refused = await start(client, "slow")
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "agent_stopped")
        made = {"id": "often", "pipeline_id": "slow", "interval_seconds": 3600}
        assert (await client.post("/schedules", json=made, headers=ADMIN)).status_code == 201
        fired = await client.post("/triggers/schedule:often/fire", headers=ADMIN)
        assert (await fired.get_json())["outcome"] == "skipped_agent_stopped"
        twice = await (await client.post("/gateway/agents/slow/stop", headers=ADMIN)).get_json()
        assert (twice["changed"], twice["cancelled"]) == (False, [])
        events = await context(app).store.events_after("deploy")
        assert events[0].data["audit"]["action"] == "agent.stop"
        assert events[0].data["cancelled"] == [running]
        live = await deploy(client, agent_id="slow", kind="pipeline", version="v1", spec={})
        assert (await live.get_json())["state"] == "live"
        assert (await start(client, "slow")).status_code == 202
        unknown = await client.post("/gateway/agents/ghost/stop", headers=ADMIN)
        assert unknown.status_code == 404
        assert_error(await unknown.get_json(), "agent_not_found")
        bad = await client.post("/gateway/agents/slow/stop", json={"reason": 7}, headers=ADMIN)
        assert bad.status_code == 400
        assert "reason" in (await bad.get_json())["error"]["message"]


async def test_a_stop_on_one_replica_refuses_new_work_on_another(settings):
    async with running_app(settings) as (_a, first), running_app(settings) as (_b, second):
        assert (await first.post("/gateway/agents/echo/stop", headers=ADMIN)).status_code == 200
        refused = await start(second, "echo")
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "agent_stopped")
        deployed = await deploy(second, agent_id="echo", kind="pipeline", version="v1", spec={})
        assert deployed.status_code == 200
        assert (await start(first, "echo")).status_code == 202


async def test_a_pinned_pipeline_version_refuses_runs_once_another_is_loaded(settings, tmp_path):
    async with running_app(settings) as (_app, client):
        pinned = {"pipeline_version": "1"}
        assert (
            await deploy(client, agent_id="echo", kind="pipeline", version="v1", spec=pinned)
        ).status_code == 200
        assert (await start(client, "echo")).status_code == 202
        write_pipelines(tmp_path, "agents", source("2"))
        assert (await client.post("/gateway/reload", headers=ADMIN)).status_code == 200
        refused = await start(client, "echo")
        assert refused.status_code == 409
        assert_error(await refused.get_json(), "agent_version_mismatch")
        live = await deploy(
            client, agent_id="echo", kind="pipeline", version="v2", spec={"pipeline_version": "2"}
        )
        assert live.status_code == 200
        assert (await start(client, "echo")).status_code == 202


class Bots:
    """An agent kind of a plugin: bots whose sessions a stop ends."""

    def __init__(self) -> None:
        self.sessions = {"helper": ["s-1", "s-2"]}

    async def exists(self, gateway: Any, agent_id: str) -> bool:
        return agent_id in self.sessions

    async def validate(self, gateway: Any, agent_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"model": spec.get("model", "echo")}

    async def stop(self, gateway: Any, agent_id: str, by: str, reason: str | None) -> list[str]:
        ended, self.sessions[agent_id] = self.sessions.get(agent_id, []), []
        return ended


async def test_gateway_register_agent_kinds_deploys_and_stops_a_plugins_agents(settings):
    bots = Bots()
    plugin = Plugin(gateway_register_agent_kinds=lambda register: register("bot", bots))
    async with running_app(settings, extra_plugins=[("bots", plugin)]) as (_app, client):
        stopped = await (await client.post("/gateway/agents/helper/stop", headers=ADMIN)).get_json()
        assert (stopped["kind"], stopped["cancelled"]) == ("bot", ["s-1", "s-2"])
        made = await deploy(client, agent_id="helper", kind="bot", version="1", spec={})
        assert (await made.get_json())["live_spec"] == {"model": "echo"}
        clash = await deploy(client, agent_id="helper", kind="pipeline", version="2", spec={})
        assert clash.status_code == 422  # no pipeline named helper


async def ws_ask(client: Any, headers: dict[str, str], kind: str) -> dict[str, Any]:
    async with client.websocket("/gateway/ws", headers=headers) as ws:
        frame = {"schema_version": 1, "request_id": "a", "kind": kind, "payload": {}}
        await ws.send(json.dumps(frame))
        while True:
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive(), 10))
            if answer["kind"] != "gateway.heartbeat":
                return answer


async def test_agents_status_ws_kind_reports_stored_agent_states_to_deployers(settings):
    async with running_app(settings) as (_app, client):
        assert (await client.post("/gateway/agents/slow/stop", headers=ADMIN)).status_code == 200
        made = await deploy(client, agent_id="echo", kind="pipeline", version="v1", spec={})
        assert made.status_code == 200
        answer = await ws_ask(client, ADMIN, "agents.status.request")
        assert answer["kind"] == "agents.status.response"
        found = {
            (a["agent_id"], a["state"], a["live_version"]) for a in answer["payload"]["agents"]
        }
        assert found == {("echo", "live", "v1"), ("slow", "stopped", None)}
        denied = await ws_ask(client, READER, "agents.status.request")
        assert (denied["kind"], denied["payload"]["code"]) == ("error", "policy_gate_denied")


async def test_concurrent_deploys_switch_one_at_a_time(settings, store_url):
    async with running_app(settings) as (_a, first), running_app(settings) as (_b, second):
        # Two replicas deploy a new agent at once: both land, one after the other.
        made = await asyncio.gather(
            deploy(first, agent_id="echo", kind="pipeline", version="a", spec={}),
            deploy(second, agent_id="echo", kind="pipeline", version="b", spec={}),
        )
        assert sorted(r.status_code for r in made) == [200, 200]
        live = await (await deploy(first, agent_id="echo", rollback_to="a")).get_json()
        assert live["live_version"] == "a"
        # Both expect "a": exactly one switches, the other is told it is stale.
        raced = await asyncio.gather(
            deploy(first, agent_id="echo", rollback_to="b", expected_version="a"),
            deploy(
                second, agent_id="echo", kind="pipeline", version="c", spec={}, expected_version="a"
            ),
        )
        assert sorted(r.status_code for r in raced) == [200, 409]
    switches = await db_rows(store_url, "SELECT action FROM deploy_switches ORDER BY n")
    assert len(switches) == 4
