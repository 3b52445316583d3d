"""The jobs plugin: ``GET /gateway/jobs`` (every source's background work, the caller's
own or everyone's with read-all, keyset pages), ``POST /gateway/jobs/{id}/cancel`` (the
run really stops and ends ``cancelled``; finished work is 409), job sources from other
plugins, and the WebSocket kinds for job and run status."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from host.api import GatewayError, context
from plugins.jobs.contract import Job, JobQuery
from tests.conftest import ADMIN, READER, assert_error, bearer, running_app
from tests.pipelines_fixtures import write_pipelines
from tests.plugins_for_tests.kit import Plugin

pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
import asyncio

from plugins.pipelines.definition import Pipeline, code, wait


async def nap(ctx):
    await asyncio.sleep(600)
    return "woke"


ECHO = Pipeline(id="echo", steps=[code("say", lambda c: c.input), code("again", lambda c: 1)])
SLOW = Pipeline(id="slow", steps=[code("nap", nap)])
ASKS = Pipeline(id="asks", steps=[wait("reply")])
"""

ALICE = bearer("test-alice-token-0123456789")
BOB = bearer("test-bob-token-0123456789")  # may cancel, sees only his own
NOSY = bearer("test-nosy-token-0123456789")  # reads every job, cancels only his own
OPS = bearer("test-ops-token-0123456789")  # reads and cancels every job
RUN = ["allow_pipeline_run", "allow_jobs_cancel"]
TOKENS = {
    "alice": {"token": "test-alice-token-0123456789", "gates": RUN},
    "bob": {"token": "test-bob-token-0123456789", "gates": RUN},
    "nosy": {"token": "test-nosy-token-0123456789", "gates": [*RUN, "allow_jobs_read_all"]},
    "ops": {
        "token": "test-ops-token-0123456789",
        "gates": [*RUN, "allow_jobs_read_all", "allow_jobs_act_all"],
    },
}


@pytest.fixture
def settings(make_settings: Any, tmp_path: Any) -> Any:
    directory = write_pipelines(tmp_path, "jobs", SOURCE)
    return make_settings(
        auth={"tokens": TOKENS},
        plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
    )


async def until(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def start(client: Any, pipeline: str, headers: dict[str, str] = ALICE) -> str:
    response = await client.post(
        f"/pipelines/{pipeline}/start", json={"input": {}}, headers=headers
    )
    assert response.status_code == 202, await response.get_data(as_text=True)
    return str((await response.get_json())["runId"])


async def run_status(client: Any, run_id: str, status: str) -> None:
    async def reached() -> bool:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        return bool(record["status"] == status)

    await until(reached, f"run {run_id} {status}")


async def jobs(client: Any, headers: dict[str, str], query: str = "") -> dict[str, Any]:
    response = await client.get(f"/gateway/jobs{query}", headers=headers)
    assert response.status_code == 200, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def test_jobs_are_the_callers_own_and_everyones_with_read_all(settings):
    async with running_app(settings) as (_app, client):
        echo = await start(client, "echo")
        asks = await start(client, "asks", BOB)
        await run_status(client, echo, "completed")
        await run_status(client, asks, "waiting")
        mine = (await jobs(client, ALICE))["jobs"]
        assert [j["id"] for j in mine] == [f"pipelines:{echo}"]
        job = mine[0]
        assert job["source"] == "pipelines" and job["kind"] == "pipeline_run"
        assert job["status"] == "completed" and job["owner"] == "token:alice"
        assert job["created_by"] == "alice" and job["started_ms"] >= job["created_ms"]
        assert job["progress"] == {"done": 2, "total": 2, "unit": "steps"}
        assert job["detail"] == {"pipeline_id": "echo", "trigger": "api"}
        assert (await jobs(client, READER))["jobs"] == []
        everyone = (await jobs(client, NOSY))["jobs"]
        assert [j["id"] for j in everyone] == [f"pipelines:{asks}", f"pipelines:{echo}"]
        assert everyone[0]["detail"]["waiting_for"] == "input"
        active = (await jobs(client, ADMIN, "?status=active"))["jobs"]
        assert [j["id"] for j in active] == [f"pipelines:{asks}"]
        finished = (await jobs(client, ADMIN, "?status=finished&source=pipelines"))["jobs"]
        assert [j["id"] for j in finished] == [f"pipelines:{echo}"]


async def test_schedule_fires_are_jobs_of_the_schedules_owner(settings):
    async with running_app(settings) as (_app, client):
        made = {"id": "hourly", "pipeline_id": "echo", "interval_seconds": 3600}
        assert (await client.post("/schedules", json=made, headers=ALICE)).status_code == 201
        fired = await client.post("/triggers/schedule:hourly/fire", headers=ALICE)
        run_id = (await fired.get_json())["runId"]
        listed = (await jobs(client, ALICE))["jobs"]
        assert [(j["id"], j["kind"]) for j in listed] == [(f"pipelines:{run_id}", "schedule_fire")]
        assert listed[0]["detail"]["schedule_id"] == "hourly"


async def test_jobs_page_by_cursor_without_repeats_or_gaps(settings):
    async with running_app(settings) as (_app, client):
        started = [await start(client, "echo") for _ in range(7)]
        seen: list[str] = []
        cursor = ""
        pages = 0
        while True:
            page = await jobs(client, ALICE, f"?limit=3{cursor}")
            seen += [j["id"].partition(":")[2] for j in page["jobs"]]
            pages += 1
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"
        assert seen == list(reversed(started))
        assert pages == 3


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?status=sleeping", "status"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?source=nowhere", "source"),
    ],
)
async def test_bad_jobs_queries_name_the_parameter(settings, query, param):
    async with running_app(settings) as (_app, client):
        response = await client.get(f"/gateway/jobs{query}", headers=ADMIN)
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "invalid_query")
        assert param in error["message"]


async def active_runs_here(client: Any) -> int:
    status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
    return int(status["plugin_status"]["pipelines"]["active_runs"])


async def test_cancelling_a_job_stops_the_run_and_finished_jobs_are_409(settings):
    async with running_app(settings) as (app, client):
        run_id = await start(client, "slow")
        await run_status(client, run_id, "running")
        assert await active_runs_here(client) == 1
        job_id = f"pipelines:{run_id}"
        cancelled = await client.post(
            f"/gateway/jobs/{job_id}/cancel", json={"reason": "too slow"}, headers=ALICE
        )
        assert cancelled.status_code == 200, await cancelled.get_data(as_text=True)
        body = await cancelled.get_json()
        assert (body["id"], body["status"]) == (job_id, "cancelled")
        record = await (await client.get(f"/runs/{run_id}", headers=ALICE)).get_json()
        assert record["status"] == "cancelled"
        assert record["error"] == {"message": "cancelled", "by": "alice", "reason": "too slow"}

        async def stopped() -> bool:
            return await active_runs_here(client) == 0

        await until(stopped, "the run's task to end")
        again = await client.post(f"/gateway/jobs/{job_id}/cancel", headers=ALICE)
        assert again.status_code == 409
        assert_error(await again.get_json(), "job_finished")
        events = await context(app).store.events_after("jobs")
        assert [e.type for e in events] == ["job.cancelled"]
        assert events[0].data["audit"] == {
            "action": "job.cancel",
            "target": job_id,
            "outcome": "succeeded",
            "reason_code": None,
        }


async def test_another_principals_job_is_404_or_403_without_act_all(settings):
    async with running_app(settings) as (_app, client):
        run_id = await start(client, "asks")
        await run_status(client, run_id, "waiting")
        path = f"/gateway/jobs/pipelines:{run_id}/cancel"
        hidden = await client.post(path, headers=BOB)
        assert hidden.status_code == 404
        assert_error(await hidden.get_json(), "job_not_found")
        denied = await client.post(path, headers=NOSY)
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")
        ungated = await client.post(path, headers=READER)
        assert ungated.status_code == 403
        for unknown in ("pipelines:0123abcd", "nowhere:1", "nocolon"):
            missing = await client.post(f"/gateway/jobs/{unknown}/cancel", headers=OPS)
            assert missing.status_code == 404, unknown
        bad = await client.post(path, json={"reason": "x" * 1001}, headers=OPS)
        assert bad.status_code == 400
        assert "reason" in assert_error(await bad.get_json(), "invalid_request_body")["message"]
        extra = await client.post(path, json={"why": "no"}, headers=OPS)
        assert extra.status_code == 400
        assert "why" in (await extra.get_json())["error"]["message"]
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        assert record["status"] == "waiting"  # nothing refused changed anything
        done = await client.post(path, headers=OPS)
        assert done.status_code == 200
        assert (await done.get_json())["status"] == "cancelled"


class Exports:
    """A plugin's own job source: two exports, one running, one finished."""

    def __init__(self) -> None:
        self.jobs = {
            "e1": Job("e1", "export", "running", "token:alice", 1, "1", progress={"done": 3}),
            "e2": Job("e2", "export", "completed", "token:alice", 2, "2"),
        }

    async def page(self, gateway: Any, query: JobQuery) -> list[Job]:
        found = sorted(self.jobs.values(), key=lambda j: -j.created_ms)
        if query.statuses is not None:
            found = [j for j in found if j.status in query.statuses]
        if query.owner is not None:
            found = [j for j in found if j.owner == query.owner]
        if query.after is not None:
            found = [j for j in found if j.created_ms < int(query.after)]
        return found[: query.limit]

    async def get(self, gateway: Any, native_id: str) -> Job | None:
        return self.jobs.get(native_id)

    async def cancel(self, gateway: Any, native_id: str, by: str, reason: str | None) -> Job:
        job = self.jobs[native_id]
        if job.status == "completed":
            raise GatewayError(409, "job_finished", "finished")
        self.jobs[native_id] = Job(native_id, "export", "cancelled", job.owner, 1, "1")
        return self.jobs[native_id]


async def test_gateway_register_job_sources_merges_a_plugins_jobs_and_cancels_them(settings):
    exports = Exports()
    plugin = Plugin(gateway_register_job_sources=lambda register: register("exports", exports))
    async with running_app(settings, extra_plugins=[("exporter", plugin)]) as (_app, client):
        run_id = await start(client, "echo")
        listed = (await jobs(client, ALICE))["jobs"]
        # Newest first across sources: the run is newer than both exports.
        assert [j["id"] for j in listed] == [f"pipelines:{run_id}", "exports:e2", "exports:e1"]
        first = await jobs(client, ALICE, "?limit=2")
        rest = await jobs(client, ALICE, f"?limit=2&cursor={first['next_cursor']}")
        assert [j["id"] for j in rest["jobs"]] == ["exports:e1"] and rest["next_cursor"] is None
        only = (await jobs(client, ALICE, "?source=exports&status=active"))["jobs"]
        assert [j["id"] for j in only] == ["exports:e1"]
        cancelled = await client.post("/gateway/jobs/exports:e1/cancel", headers=ALICE)
        assert (await cancelled.get_json())["status"] == "cancelled"
        finished = await client.post("/gateway/jobs/exports:e2/cancel", headers=ALICE)
        assert finished.status_code == 409


async def ask(ws: Any, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    await ws.send(
        json.dumps({"schema_version": 1, "request_id": "r", "kind": kind, "payload": payload})
    )
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.receive(), 10))
        if frame["kind"] != "gateway.heartbeat":
            return frame


async def test_ws_kinds_report_jobs_and_active_runs_with_ownership(settings):
    async with running_app(settings) as (_app, client):
        waiting = await start(client, "asks")
        running = await start(client, "slow")
        await run_status(client, waiting, "waiting")
        await run_status(client, running, "running")
        async with client.websocket("/gateway/ws", headers=ALICE) as ws:
            active = await ask(ws, "runs.active.request", {})
            assert active["kind"] == "runs.active.response"
            runs = {r["run_id"]: r for r in active["payload"]["runs"]}
            assert set(runs) == {waiting, running}
            assert runs[waiting]["status"] == "waiting" and runs[waiting]["waiting_for"] == "input"
            assert runs[running]["status"] == "running"
            assert runs[running]["progress"] == {"done": 0, "total": 1, "unit": "steps"}
            status = await ask(ws, "job.status.request", {"job_id": f"pipelines:{waiting}"})
            assert status["payload"]["job"]["status"] == "waiting"
            listed = await ask(ws, "jobs.list.request", {"status": "active", "limit": 1})
            assert len(listed["payload"]["jobs"]) == 1 and listed["payload"]["next_cursor"]
            bad = await ask(ws, "jobs.list.request", {"limit": 0})
            assert bad["kind"] == "error" and "limit" in bad["payload"]["message"]
        async with client.websocket("/gateway/ws", headers=BOB) as ws:
            assert (await ask(ws, "runs.active.request", {}))["payload"]["runs"] == []
            hidden = await ask(ws, "job.status.request", {"job_id": f"pipelines:{waiting}"})
            assert hidden["kind"] == "error"
            assert hidden["payload"]["code"] == "job_not_found"
        cancel = await client.post(f"/gateway/jobs/pipelines:{running}/cancel", headers=ALICE)
        assert cancel.status_code == 200


async def test_a_setting_in_the_jobs_section_is_refused_naming_it(make_settings):
    async with running_app(make_settings()) as (_app, client):
        patch = {"plugins": {"jobs": {"page_size": 10}, "deploy": {"x": 1}}}
        response = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert response.status_code == 400
        message = assert_error(await response.get_json(), "config_invalid")["message"]
        assert "plugins.jobs.page_size" in message and "plugins.deploy.x" in message


async def test_with_the_pipelines_plugin_off_jobs_list_nothing_and_no_pipeline_is_an_agent(
    make_settings,
):
    settings = make_settings(plugins={"pipelines": {"enabled": False}})
    async with running_app(settings) as (_app, client):
        assert (await jobs(client, ADMIN))["jobs"] == []
        stop = await client.post("/gateway/agents/echo-chat/stop", headers=ADMIN)
        assert stop.status_code == 404
        tools = await (await client.get("/gateway/tools", headers=ADMIN)).get_json()
        assert "gateway_pipelines" in {t["name"] for t in tools["tools"]}
