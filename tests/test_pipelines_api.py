"""The pipelines plugin through HTTP (Quart test client, real SQLite in tmp_path):
definitions, runs, approvals, waits, cancel, pause, breakpoints, reload, idempotency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from host.api import hookimpl
from plugins.pipelines.definition import Pipeline, code
from tests.conftest import ADMIN, READER, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, pipelines_settings, write_pipelines

TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    return write_pipelines(tmp_path, "testing", PIPELINES_SOURCE)


@pytest.fixture
def settings(make_settings: Any, pipelines_dir: Path, store_url: str) -> Any:
    # On SQLite and on PostgreSQL (``store_url`` makes ``make_settings`` follow it).
    return pipelines_settings(make_settings, pipelines_dir)


@pytest.fixture
async def client(settings: Any) -> Any:
    async with running_app(settings) as (_app, test_client):
        yield test_client


async def wait_status(client: Any, run_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        if record["status"] in statuses or time.monotonic() > deadline:
            assert record["status"] in statuses, record
            return dict(record)
        await asyncio.sleep(0.02)


async def start(
    client: Any, pipeline: str, body: Any = None, headers: dict[str, str] = ADMIN
) -> Any:
    return await client.post(
        f"/pipelines/{pipeline}/start", json=body if body is not None else {}, headers=headers
    )


async def run_count(client: Any) -> int:
    page = await (await client.get("/runs?limit=500", headers=ADMIN)).get_json()
    return len(page["runs"])


async def event_types(client: Any, run_id: str) -> list[str]:
    page = await (await client.get(f"/runs/{run_id}/events?format=json", headers=ADMIN)).get_json()
    return [e["type"] for e in page["events"]]


def assert_error(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert {"type", "code", "message"} <= set(body["error"])
    assert body["error"]["code"] == code, body


# -- definitions -------------------------------------------------------------------------------


async def test_pipelines_are_listed_from_the_directory_and_described_with_schemas(client):
    listing = await (await client.get("/pipelines", headers=READER)).get_json()
    ids = {p["id"] for p in listing["pipelines"]}
    assert {"three", "options", "gated", "input", "durable"} <= ids
    assert listing["errors"] == {}
    detail = await (await client.get("/pipelines/three", headers=READER)).get_json()
    assert [s["id"] for s in detail["steps"]] == ["one", "two", "three"]
    assert detail["input_schema"]["properties"]["n"]["minimum"] == 0
    assert detail["input_schema"]["required"] == ["n"]
    composite = await (await client.get("/pipelines/composite", headers=READER)).get_json()
    assert composite["steps"][2]["max"] == 3 and composite["steps"][1]["branches"]


async def test_unknown_pipeline_is_404_on_describe_start_and_run(client):
    for method, path in [
        ("GET", "/pipelines/nope"),
        ("POST", "/pipelines/nope/start"),
        ("POST", "/pipelines/nope/run"),
    ]:
        response = await client.open(path, method=method, json={}, headers=ADMIN)
        assert response.status_code == 404
        assert_error(await response.get_json(), "pipeline_not_found")
    assert await run_count(client) == 0


async def test_default_directory_ships_the_offline_examples(make_settings):
    # Safety off: the deltas below are the llm step's token stream, which the safety
    # hold-back coalesces for an answer this short (tests/test_safety_stages.py).
    settings = make_settings(plugins={"safety": {"enabled": False}})
    async with running_app(settings) as (_app, client):
        listing = await (await client.get("/pipelines", headers=ADMIN)).get_json()
        ids = {p["id"] for p in listing["pipelines"]}
        assert {"approval-publish", "ask-name", "nightly-report"} <= ids
        started = await start(client, "approval-publish", {"input": {"topic": "gardens"}})
        run_id = (await started.get_json())["runId"]
        record = await wait_status(client, run_id, {"waiting"})
        assert record["waiting_for"]["type"] == "approval"
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        done = await wait_status(client, run_id, TERMINAL)
        assert done["output"]["published"] is True
        assert done["output"]["approved_by"] == "admin"
        # The draft is an llm step on the offline echo model, streamed as step deltas.
        expected = "echo: Write a short note on gardens for everyone."
        assert done["output"]["text"] == expected
        assert [s["step_id"] for s in done["steps"]] == ["draft", "review", "publish"]
        page = await client.get(f"/runs/{run_id}/events?format=json", headers=ADMIN)
        deltas = [e for e in (await page.get_json())["events"] if e["type"] == "step.delta"]
        assert "".join(d["data"]["text"] for d in deltas) == expected
        assert len(deltas) > 1 and {d["data"]["step"] for d in deltas} == {"draft"}


# -- starting and running ----------------------------------------------------------------------


async def test_start_answers_202_and_the_run_completes_with_step_results(client):
    response = await start(client, "three", {"input": {"n": 4}})
    assert response.status_code == 202
    body = await response.get_json()
    assert body["created"] is True and body["events"] == f"/runs/{body['runId']}/events"
    record = await wait_status(client, body["runId"], TERMINAL)
    assert record["status"] == "completed"
    assert record["output"] == {"v": 11}
    assert [s["step_id"] for s in record["steps"]] == ["one", "two", "three"]
    assert all(s["finished_ms"] >= s["started_ms"] for s in record["steps"])
    assert record["trigger"] == {"type": "api", "route": "start"}
    types = await event_types(client, body["runId"])
    assert types[:2] == ["run.created", "run.started"]
    assert types.count("step.completed") == 3 and types[-1] == "run.completed"


async def test_run_returns_the_finished_record_synchronously(client):
    response = await client.post(
        "/pipelines/three/run", json={"input": {"n": 1}, "wait_seconds": 10}, headers=ADMIN
    )
    assert response.status_code == 200
    record = await response.get_json()
    assert record["status"] == "completed" and record["output"] == {"v": 5}


async def test_input_failing_the_schema_is_422_naming_the_field_and_starts_nothing(client):
    for path in ("/pipelines/three/start", "/pipelines/three/run"):
        response = await client.post(path, json={"input": {"n": -1}}, headers=ADMIN)
        assert response.status_code == 422
        body = await response.get_json()
        assert_error(body, "validation_failed")
        assert "input.n" in body["error"]["message"]
        response = await client.post(path, json={"input": {}}, headers=ADMIN)
        assert response.status_code == 422
        assert "input.n" in (await response.get_json())["error"]["message"]
    bad_body = await client.post("/pipelines/three/start", json={"inputs": {}}, headers=ADMIN)
    assert bad_body.status_code == 400
    assert_error(await bad_body.get_json(), "invalid_request_body")
    assert await run_count(client) == 0


async def test_start_and_approve_need_their_policy_gates(client):
    response = await start(client, "three", {"input": {"n": 1}}, headers=READER)
    assert response.status_code == 403
    assert_error(await response.get_json(), "policy_gate_denied")
    assert await run_count(client) == 0
    gated = await (await start(client, "gated")).get_json()
    await wait_status(client, gated["runId"], {"waiting"})
    denied = await client.post(f"/runs/{gated['runId']}/approve", json={}, headers=READER)
    assert denied.status_code == 403
    assert (await wait_status(client, gated["runId"], {"waiting"}))["status"] == "waiting"


async def test_idempotency_key_returns_the_same_run_across_a_restart(settings):
    key = {"Idempotency-Key": "order-42", **ADMIN}
    async with running_app(settings) as (_app, client):
        first = await client.post("/pipelines/three/start", json={"input": {"n": 1}}, headers=key)
        again = await client.post("/pipelines/three/start", json={"input": {"n": 1}}, headers=key)
        first_body, again_body = await first.get_json(), await again.get_json()
        assert first_body["created"] is True and again_body["created"] is False
        assert again_body["runId"] == first_body["runId"]
    async with running_app(settings) as (_app, client):
        after = await client.post("/pipelines/three/start", json={"input": {"n": 1}}, headers=key)
        body = await after.get_json()
        assert body["runId"] == first_body["runId"] and body["created"] is False
        assert await run_count(client) == 1
        record = await wait_status(client, body["runId"], TERMINAL)
        assert record["idempotency_key"] == "order-42"


async def test_step_options_retries_when_and_continue_on_error(client):
    run_id = (await (await start(client, "options")).get_json())["runId"]
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed"
    steps = {s["step_id"]: s for s in record["steps"]}
    assert steps["flaky"]["attempts"] == 3 and steps["flaky"]["output"] == {"tries": 3}
    assert steps["skipped"]["status"] == "skipped"
    assert steps["tolerated"]["status"] == "failed"
    assert "broken on purpose" in steps["tolerated"]["error"]
    assert steps["last"]["status"] == "completed"
    types = await event_types(client, run_id)
    assert types.count("step.retry") == 2 and "step.skipped" in types


async def test_a_failing_step_fails_the_run_and_a_timeout_fails_its_step(client):
    failing = (await (await start(client, "failing")).get_json())["runId"]
    record = await wait_status(client, failing, TERMINAL)
    assert record["status"] == "failed"
    assert record["error"]["step"] == "boom" and "broken on purpose" in record["error"]["message"]
    assert [s["step_id"] for s in record["steps"]] == ["boom"]
    assert (await event_types(client, failing))[-2:] == ["step.failed", "run.failed"]
    slow = (await (await start(client, "timeout")).get_json())["runId"]
    record = await wait_status(client, slow, TERMINAL)
    assert record["status"] == "failed" and "timed out" in record["error"]["message"]


async def test_branch_parallel_and_loop_steps(client):
    run_id = (await (await start(client, "composite", {"input": {"big": True}})).get_json())[
        "runId"
    ]
    record = await wait_status(client, run_id, TERMINAL)
    steps = {s["step_id"]: s["output"] for s in record["steps"]}
    assert steps["pick"] == {"branch": "then", "results": {"big": "big"}}
    assert steps["both"] == {"a": {"pa": 1}, "b": {"pb": 2}}
    assert steps["count"]["iterations"] == 3
    assert [p["tick"] for p in steps["count"]["results"]] == [0, 1, 2]


async def test_llm_step_without_the_openai_compat_plugin_fails_clearly(
    make_settings, pipelines_dir
):
    settings = make_settings(
        plugins={
            "pipelines": {"directory": str(pipelines_dir), "poll_seconds": 0.05},
            "openai_compat": {"enabled": False},
        }
    )
    async with running_app(settings) as (_app, client):
        run_id = (await (await start(client, "llm-step")).get_json())["runId"]
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "failed"
        assert "openai_compat" in record["error"]["message"]


# -- approvals, waits, cancel ------------------------------------------------------------------


async def test_approval_gate_waits_is_listed_and_approve_completes_the_run(client):
    run_id = (await (await start(client, "gated")).get_json())["runId"]
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["type"] == "approval"
    assert record["waiting_for"]["step"] == "review"
    pending = await (await client.get("/approvals", headers=ADMIN)).get_json()
    assert [(a["run_id"], a["step_id"], a["status"]) for a in pending["approvals"]] == [
        (run_id, "review", "pending")
    ]
    approved = await client.post(f"/runs/{run_id}/approve", json={"reason": "fine"}, headers=ADMIN)
    assert approved.status_code == 200
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed" and record["output"] == {"done": True}
    review = {s["step_id"]: s for s in record["steps"]}["review"]["output"]
    assert review["approver"] == "admin" and review["reason"] == "fine"
    assert (await (await client.get("/approvals", headers=ADMIN)).get_json())["approvals"] == []
    every = await (await client.get("/approvals?status=all", headers=ADMIN)).get_json()
    assert every["approvals"][0]["status"] == "approved"
    types = await event_types(client, run_id)
    assert "approval.requested" in types and "approval.resolved" in types


async def test_approval_timeout_resolves_by_its_on_timeout_policy(client):
    approved = (await (await start(client, "timed")).get_json())["runId"]
    record = await wait_status(client, approved, TERMINAL)
    assert record["status"] == "completed" and record["output"] == {"decision": "approved"}
    expired = (await (await start(client, "expiring")).get_json())["runId"]
    record = await wait_status(client, expired, TERMINAL)
    assert record["status"] == "failed" and "timed out" in record["error"]["message"]
    every = await (await client.get("/approvals?status=all", headers=ADMIN)).get_json()
    by_run = {a["run_id"]: a for a in every["approvals"]}
    assert by_run[approved]["status"] == "approved" and by_run[approved]["approver"] == "timeout"
    assert by_run[expired]["status"] == "timed_out"
    metrics = (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()
    assert 'gateway_pipeline_runs_finished_total{pipeline="expiring",status="failed"} 1.0' in (
        metrics
    )


async def test_deny_fails_the_run_with_approver_and_reason(client):
    run_id = (await (await start(client, "gated")).get_json())["runId"]
    await wait_status(client, run_id, {"waiting"})
    denied = await client.post(f"/runs/{run_id}/deny", json={"reason": "no"}, headers=ADMIN)
    assert denied.status_code == 200
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "failed"
    assert "denied by admin: no" in record["error"]["message"]


async def test_approving_a_run_not_waiting_for_approval_is_409_and_changes_nothing(client):
    done = (await (await start(client, "three", {"input": {"n": 1}})).get_json())["runId"]
    before = await wait_status(client, done, TERMINAL)
    for action in ("approve", "deny"):
        response = await client.post(f"/runs/{done}/{action}", json={}, headers=ADMIN)
        assert response.status_code == 409
        assert_error(await response.get_json(), "not_waiting_for_approval")
    waiting = (await (await start(client, "input")).get_json())["runId"]
    await wait_status(client, waiting, {"waiting"})
    response = await client.post(f"/runs/{waiting}/approve", json={}, headers=ADMIN)
    assert response.status_code == 409
    assert (await wait_status(client, waiting, {"waiting"}))["waiting_for"]["type"] == "input"
    assert (await wait_status(client, done, TERMINAL)) == before
    missing = await client.post("/runs/nope/approve", json={}, headers=ADMIN)
    assert missing.status_code == 404
    assert_error(await missing.get_json(), "run_not_found")


async def test_resume_validates_input_against_the_wait_step_schema(client):
    run_id = (await (await start(client, "input")).get_json())["runId"]
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["schema"]["required"] == ["text"]
    bad = await client.post(f"/runs/{run_id}/resume", json={"input": {"text": "x"}}, headers=ADMIN)
    assert bad.status_code == 422
    body = await bad.get_json()
    assert_error(body, "validation_failed")
    assert "input.text" in body["error"]["message"]
    still = await wait_status(client, run_id, {"waiting"})
    assert still["updated_ms"] == record["updated_ms"]
    assert "run.resumed" not in await event_types(client, run_id)
    good = await client.post(
        f"/runs/{run_id}/resume", json={"input": {"text": "hello"}}, headers=ADMIN
    )
    assert good.status_code == 200
    done = await wait_status(client, run_id, TERMINAL)
    assert done["output"] == {"v": 1, "text": "hello"}
    again = await client.post(f"/runs/{run_id}/resume", json={"input": {}}, headers=ADMIN)
    assert again.status_code == 409
    assert_error(await again.get_json(), "not_waiting_for_input")


async def test_cancel_a_waiting_run_and_refuse_cancelling_a_finished_one(client):
    run_id = (await (await start(client, "gated")).get_json())["runId"]
    await wait_status(client, run_id, {"waiting"})
    response = await client.post(f"/runs/{run_id}/cancel", json={"reason": "stop"}, headers=ADMIN)
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "cancelled"
    assert (await (await client.get("/approvals", headers=ADMIN)).get_json())["approvals"] == []
    again = await client.post(f"/runs/{run_id}/cancel", json={}, headers=ADMIN)
    assert again.status_code == 409
    assert_error(await again.get_json(), "run_finished")
    assert (await event_types(client, run_id))[-1] == "run.cancelled"


# -- listing and streams -----------------------------------------------------------------------


async def test_runs_are_listed_with_filters_and_pages(client):
    ids = []
    for n in range(3):
        ids.append((await (await start(client, "three", {"input": {"n": n}})).get_json())["runId"])
    waiting = (await (await start(client, "gated")).get_json())["runId"]
    for run_id in ids:
        await wait_status(client, run_id, TERMINAL)
    await wait_status(client, waiting, {"waiting"})
    page = await (await client.get("/runs?pipeline=three&limit=2", headers=ADMIN)).get_json()
    assert [r["id"] for r in page["runs"]] == [ids[2], ids[1]]
    rest = await (
        await client.get(
            f"/runs?pipeline=three&limit=2&before={page['next_before']}", headers=ADMIN
        )
    ).get_json()
    assert [r["id"] for r in rest["runs"]] == [ids[0]] and rest["next_before"] is None
    by_status = await (await client.get("/runs?status=waiting", headers=ADMIN)).get_json()
    assert [r["id"] for r in by_status["runs"]] == [waiting]
    future = await (await client.get("/runs?since_ms=99999999999999", headers=ADMIN)).get_json()
    assert future["runs"] == []
    bad = await client.get("/runs?status=bogus", headers=ADMIN)
    assert bad.status_code == 400
    assert (await client.get("/runs/nope", headers=ADMIN)).status_code == 404
    assert (await client.get("/runs/nope/events?format=json", headers=ADMIN)).status_code == 404


async def test_sse_stream_of_a_finished_run_replays_resumes_and_ends(client):
    run_id = (await (await start(client, "three", {"input": {"n": 2}})).get_json())["runId"]
    await wait_status(client, run_id, TERMINAL)
    full = await client.get(f"/runs/{run_id}/events", headers=ADMIN)
    text = (await full.get_data()).decode()
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1)) and "event: run.completed" in text
    resumed = await client.get(
        f"/runs/{run_id}/events", headers={**ADMIN, "Last-Event-ID": str(ids[-3])}
    )
    later = (await resumed.get_data()).decode()
    assert [int(line[4:]) for line in later.splitlines() if line.startswith("id: ")] == ids[-2:]
    jsonl = await client.get(
        f"/runs/{run_id}/events", headers={**ADMIN, "Accept": "application/x-ndjson"}
    )
    lines = (await jsonl.get_data()).decode().splitlines()
    assert len(lines) == len(ids)


async def test_sse_stream_delivers_live_events_until_the_run_ends(client):
    run_id = (await (await start(client, "gated")).get_json())["runId"]
    await wait_status(client, run_id, {"waiting"})
    received = b""
    async with client.request(f"/runs/{run_id}/events", headers=ADMIN) as conn:
        await conn.send_complete()
        while b"event: run.waiting" not in received:
            received += await conn.receive()
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        while b"event: run.completed" not in received:
            received += await conn.receive()
        await conn.disconnect()
    assert b"event: approval.resolved" in received and b"event: run.resumed" in received


# -- pause, breakpoints, reload, concurrency ---------------------------------------------------


async def test_pause_refuses_every_start_path_and_resume_restores_them(client):
    waiting = (await (await start(client, "input")).get_json())["runId"]
    await wait_status(client, waiting, {"waiting"})
    assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 200
    before = await run_count(client)
    for path in ("/pipelines/three/start", "/pipelines/three/run"):
        response = await client.post(path, json={"input": {"n": 1}}, headers=ADMIN)
        assert response.status_code == 503
        assert_error(await response.get_json(), "gateway_paused")
    assert await run_count(client) == before
    # In-flight runs go on while paused.
    resumed = await client.post(
        f"/runs/{waiting}/resume", json={"input": {"text": "still here"}}, headers=ADMIN
    )
    assert resumed.status_code == 200
    assert (await wait_status(client, waiting, TERMINAL))["status"] == "completed"
    assert (await client.post("/gateway/resume", headers=ADMIN)).status_code == 200
    assert (await start(client, "three", {"input": {"n": 1}})).status_code == 202


async def test_breakpoints_pause_runs_from_start_and_run_until_released(client):
    added = await client.post(
        "/debug/breakpoints", json={"step_id": "two", "pipeline_id": "three"}, headers=ADMIN
    )
    assert added.status_code == 201
    listed = await (await client.get("/debug/breakpoints", headers=ADMIN)).get_json()
    assert [b["step_id"] for b in listed["breakpoints"]] == ["two"]
    started = (await (await start(client, "three", {"input": {"n": 1}})).get_json())["runId"]
    ran = await client.post(
        "/pipelines/three/run", json={"input": {"n": 2}, "wait_seconds": 10}, headers=ADMIN
    )
    ran_record = await ran.get_json()
    assert ran_record["status"] == "paused" and ran_record["paused_at"] == "two"
    paused = await wait_status(client, started, {"paused"})
    assert [s["step_id"] for s in paused["steps"]] == ["one"]
    debug_runs = await (await client.get("/debug/runs", headers=ADMIN)).get_json()
    assert {r["id"] for r in debug_runs["runs"]} == {started, ran_record["id"]}
    released = await client.post(f"/debug/runs/{started}/release", headers=ADMIN)
    assert released.status_code == 200
    done = await wait_status(client, started, TERMINAL)
    assert done["output"] == {"v": 5}
    assert "run.released" in await event_types(client, started)
    not_paused = await client.post(f"/debug/runs/{started}/release", headers=ADMIN)
    assert not_paused.status_code == 409
    assert_error(await not_paused.get_json(), "not_paused")
    removed = await client.delete("/debug/breakpoints/two", headers=ADMIN)
    assert removed.status_code == 200
    assert (await client.delete("/debug/breakpoints/two", headers=ADMIN)).status_code == 404
    await client.post(f"/debug/runs/{ran_record['id']}/release", headers=ADMIN)
    assert (await wait_status(client, ran_record["id"], TERMINAL))["status"] == "completed"


async def test_breakpoint_on_an_unknown_step_is_404_and_not_stored(client):
    response = await client.post(
        "/debug/breakpoints", json={"step_id": "nope", "pipeline_id": "three"}, headers=ADMIN
    )
    assert response.status_code == 404
    assert_error(await response.get_json(), "step_not_found")
    listed = await (await client.get("/debug/breakpoints", headers=ADMIN)).get_json()
    assert listed["breakpoints"] == []


async def test_reload_reports_a_broken_file_keeps_the_last_good_and_in_flight_runs_keep_theirs(
    client, pipelines_dir
):
    run_id = (await (await start(client, "input")).get_json())["runId"]
    await wait_status(client, run_id, {"waiting"})
    source = (pipelines_dir / "testing.py").read_text()
    (pipelines_dir / "testing.py").write_text(
        source.replace('{"v": 1, "text"', '{"v": 2, "text"').replace('version="1"', 'version="2"')
    )
    (pipelines_dir / "broken.py").write_text("this is not python\n")
    reload = await client.post("/gateway/reload", headers=ADMIN)
    assert reload.status_code == 200
    report = (await reload.get_json())["plugins"]["pipelines"]
    assert report["status"] == "error" and "broken.py" in report["errors"]
    listing = await (await client.get("/pipelines", headers=ADMIN)).get_json()
    assert "broken.py" in listing["errors"] and "three" in {p["id"] for p in listing["pipelines"]}
    detail = await (await client.get("/pipelines/input", headers=ADMIN)).get_json()
    assert detail["version"] == "2"
    await client.post(f"/runs/{run_id}/resume", json={"input": {"text": "old"}}, headers=ADMIN)
    assert (await wait_status(client, run_id, TERMINAL))["output"]["v"] == 1
    fresh = (await (await start(client, "input")).get_json())["runId"]
    await wait_status(client, fresh, {"waiting"})
    await client.post(f"/runs/{fresh}/resume", json={"input": {"text": "new"}}, headers=ADMIN)
    assert (await wait_status(client, fresh, TERMINAL))["output"]["v"] == 2
    # A file that breaks after it loaded keeps its last good definitions.
    (pipelines_dir / "testing.py").write_text("raise RuntimeError('oops')\n")
    report = (await (await client.post("/gateway/reload", headers=ADMIN)).get_json())["plugins"]
    assert "testing.py" in report["pipelines"]["errors"]
    assert (await client.get("/pipelines/three", headers=ADMIN)).status_code == 200


class GatePlugin:
    """Registers a pipeline through the hook; its step waits for the test to open a gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.order: list[int] = []

    async def hold(self, ctx: Any) -> dict[str, int]:
        self.order.append(ctx.input["i"])
        await self.gate.wait()
        return {"i": ctx.input["i"]}

    @hookimpl
    def gateway_register_pipelines(self, register: Any) -> None:
        register("held", Pipeline(id="held", steps=[code("hold", self.hold)]))


async def test_concurrency_limit_keeps_the_rest_pending_and_starts_them_in_order(make_settings):
    plugin = GatePlugin()
    settings = make_settings(
        plugins={"pipelines": {"max_concurrent_runs": 1, "poll_seconds": 0.05}}
    )
    async with running_app(settings, extra_plugins=[("gate", plugin)]) as (_app, client):
        ids = []
        for i in range(3):
            ids.append(
                (await (await start(client, "held", {"input": {"i": i}})).get_json())["runId"]
            )
        await wait_status(client, ids[0], {"running"})
        for run_id in ids[1:]:
            assert (await wait_status(client, run_id, {"pending"}))["status"] == "pending"
        plugin.gate.set()
        for run_id in ids:
            assert (await wait_status(client, run_id, TERMINAL))["status"] == "completed"
        assert plugin.order == [0, 1, 2]
        metrics = (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()
        assert 'gateway_pipeline_runs_finished_total{pipeline="held",status="completed"} 3.0' in (
            metrics
        )


@pytest.mark.parametrize("param", ["since_ms", "until_ms", "before"])
async def test_run_filters_beyond_64_bits_are_a_400_not_a_500(client, param):
    # Found by schemathesis: a larger integer overflowed the store's 64-bit column.
    r = await client.get(f"/runs?{param}={2**63}", headers=ADMIN)
    assert r.status_code == 400
    error = (await r.get_json())["error"]
    assert error["type"] == "invalid_request_error" and param in error["message"]
