"""Breakpoints on steps nested in branch, loop and parallel steps, through HTTP: a
breakpoint names a step by its id (it pauses there at any depth, in every loop pass) or
by its path (only there); the run is ``paused`` naming the step path, a release continues
it to the next hit, and nested steps that completed are not run again (also after a
restart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, running_app
from tests.pipelines_fixtures import NOTED_STEP, pipelines_settings, write_pipelines
from tests.test_pipelines_api import TERMINAL, assert_error, start, wait_status

# Runs, schedules, keys and events are stored: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

BREAKPOINTS_SOURCE = (
    """
from pathlib import Path

from plugins.pipelines.definition import Pipeline, approval, branch, code, loop, parallel


"""
    + NOTED_STEP
    + """

BRANCHED = Pipeline(
    id="bp-branched",
    steps=[
        code("draft", noted("draft")),
        branch(
            "review",
            lambda c: True,
            then=[
                code("prepare", noted("prepare")),
                code("check", noted("check")),
                approval("gate", "ok?"),
                code("after", noted("after")),
            ],
        ),
        code("publish", lambda c: sorted(c.results["review"]["results"])),
    ],
)

LOOPED = Pipeline(
    id="bp-looped",
    steps=[
        loop("rounds", [code("ask", noted("ask")), code("tally", noted("tally"))], max=3),
    ],
)

FANNED = Pipeline(
    id="bp-fanned",
    steps=[
        parallel(
            "both",
            {
                "a": [code("left", noted("left"))],
                "b": [code("work", noted("work")), code("right", noted("right"))],
                "c": [code("solo", noted("solo"))],
            },
        ),
        code("done", lambda c: sorted(c.results["both"])),
    ],
)
"""
)


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Any:
    directory = write_pipelines(tmp_path, "breakpoints", BREAKPOINTS_SOURCE)
    return pipelines_settings(make_settings, directory)


@pytest.fixture
async def client(settings: Any) -> Any:
    async with running_app(settings) as (_app, test_client):
        yield test_client


async def started(client: Any, pipeline: str, log: Path) -> str:
    response = await start(client, pipeline, {"input": {"log": str(log)}})
    assert response.status_code == 202
    return str((await response.get_json())["runId"])


async def add_breakpoint(client: Any, step_id: str, pipeline: str | None = None) -> Any:
    body: dict[str, Any] = {"step_id": step_id}
    if pipeline is not None:
        body["pipeline_id"] = pipeline
    return await client.post("/debug/breakpoints", json=body, headers=ADMIN)


async def release(client: Any, run_id: str) -> dict[str, Any]:
    response = await client.post(f"/debug/runs/{run_id}/release", headers=ADMIN)
    assert response.status_code == 200
    return dict(await response.get_json())


async def paused_at(client: Any, run_id: str) -> str:
    record = await wait_status(client, run_id, {"paused"} | TERMINAL)
    assert record["status"] == "paused", record
    return str(record["paused_at"])


async def events(client: Any, run_id: str, type_: str) -> list[dict[str, Any]]:
    page = await (await client.get(f"/runs/{run_id}/events?format=json", headers=ADMIN)).get_json()
    return [e["data"] for e in page["events"] if e["type"] == type_]


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def test_a_breakpoint_on_a_nested_step_pauses_before_it_and_release_continues(
    client, tmp_path
):
    assert (await add_breakpoint(client, "check", "bp-branched")).status_code == 201
    log = tmp_path / "log"
    run_id = await started(client, "bp-branched", log)
    assert await paused_at(client, run_id) == "review.check"
    assert lines(log) == [f"{run_id}:draft 1", f"{run_id}:review.prepare 1"]
    debug_runs = await (await client.get("/debug/runs", headers=ADMIN)).get_json()
    assert [(r["id"], r["paused_at"]) for r in debug_runs["runs"]] == [(run_id, "review.check")]
    paused = await events(client, run_id, "run.paused")
    assert [(e["step"], e["breakpoint"]) for e in paused] == [("review.check", "check")]

    await release(client, run_id)
    # The run goes on past the breakpoint to the approval after it, then to its end.
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["step"] == "review.gate"
    assert (await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)).status_code == 200
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["output"] == ["after", "check", "gate", "prepare"]
    # Nothing ran twice, and the run paused once.
    assert lines(log) == [
        f"{run_id}:draft 1",
        f"{run_id}:review.prepare 1",
        f"{run_id}:review.check 1",
        f"{run_id}:review.after 1",
    ]
    assert [e["step"] for e in await events(client, run_id, "run.released")] == ["review.check"]
    assert len(await events(client, run_id, "run.paused")) == 1


async def test_breakpoints_on_a_parent_and_its_nested_step_pause_at_each_in_turn(client, tmp_path):
    await add_breakpoint(client, "review", "bp-branched")
    await add_breakpoint(client, "review.after", "bp-branched")
    log = tmp_path / "log"
    run_id = await started(client, "bp-branched", log)
    assert await paused_at(client, run_id) == "review"
    assert lines(log) == [f"{run_id}:draft 1"]
    await release(client, run_id)
    await wait_status(client, run_id, {"waiting"})
    await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
    # Resumed after the approval, the branch step is not paused before again.
    assert await paused_at(client, run_id) == "review.after"
    await release(client, run_id)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert [e["step"] for e in await events(client, run_id, "run.paused")] == [
        "review",
        "review.after",
    ]
    assert len(lines(log)) == 4  # draft, prepare, check, after: each once


async def test_a_breakpoint_by_id_pauses_at_every_loop_pass(client, tmp_path):
    await add_breakpoint(client, "tally", "bp-looped")
    log = tmp_path / "log"
    run_id = await started(client, "bp-looped", log)
    for i in range(3):
        assert await paused_at(client, run_id) == f"rounds[{i}].tally"
        # The pass's "ask" ran before the pause; its "tally" not yet.
        assert lines(log)[-1] == f"{run_id}:rounds[{i}].ask 1"
        await release(client, run_id)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["output"]["iterations"] == 3
    assert lines(log) == [
        f"{run_id}:rounds[{i}].{step} 1" for i in range(3) for step in ("ask", "tally")
    ]
    assert [e["step"] for e in await events(client, run_id, "run.released")] == [
        f"rounds[{i}].tally" for i in range(3)
    ]


async def test_a_breakpoint_by_path_pauses_at_that_pass_only(client, tmp_path):
    added = await add_breakpoint(client, "rounds[1].ask", "bp-looped")
    assert added.status_code == 201
    assert (await added.get_json())["step_id"] == "rounds[1].ask"
    log = tmp_path / "log"
    run_id = await started(client, "bp-looped", log)
    assert await paused_at(client, run_id) == "rounds[1].ask"
    assert lines(log) == [f"{run_id}:rounds[0].ask 1", f"{run_id}:rounds[0].tally 1"]
    await release(client, run_id)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert len(lines(log)) == 6
    paused = await events(client, run_id, "run.paused")
    assert [(e["step"], e["breakpoint"]) for e in paused] == [("rounds[1].ask", "rounds[1].ask")]
    # A path breakpoint is removed by its path (brackets and all).
    removed = await client.delete("/debug/breakpoints/rounds%5B1%5D.ask", headers=ADMIN)
    assert removed.status_code == 200
    listed = await (await client.get("/debug/breakpoints", headers=ADMIN)).get_json()
    assert listed["breakpoints"] == []


async def test_a_breakpoint_in_a_parallel_branch_pauses_once_its_siblings_have_ended(
    client, tmp_path
):
    await add_breakpoint(client, "right")  # every pipeline: no pipeline_id
    log = tmp_path / "log"
    run_id = await started(client, "bp-fanned", log)
    assert await paused_at(client, run_id) == "both.right"
    assert sorted(lines(log)) == sorted(
        [f"{run_id}:both.left 1", f"{run_id}:both.work 1", f"{run_id}:both.solo 1"]
    )
    await release(client, run_id)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["output"] == ["a", "b", "c"]
    assert sorted(lines(log)) == sorted(
        [
            f"{run_id}:both.left 1",
            f"{run_id}:both.work 1",
            f"{run_id}:both.solo 1",
            f"{run_id}:both.right 1",
        ]
    )


async def test_nested_breakpoint_names_are_checked_and_a_bad_one_is_not_stored(client):
    for step_id in ("rounds.ask", "rounds[3].ask", "nope.ask", "rounds[0].nope", "ask.rounds"):
        response = await add_breakpoint(client, step_id, "bp-looped")
        assert response.status_code == 404, step_id
        assert_error(await response.get_json(), "step_not_found")
    response = await add_breakpoint(client, "review[0].check", "bp-branched")
    assert response.status_code == 404
    for step_id in ("a..b", "x#y", "rounds[1]", "rounds[x].ask", ".ask"):
        response = await add_breakpoint(client, step_id)
        assert response.status_code == 400, step_id
        body = await response.get_json()
        assert_error(body, "invalid_request_body")
        assert "step_id" in body["error"]["message"]
    listed = await (await client.get("/debug/breakpoints", headers=ADMIN)).get_json()
    assert listed["breakpoints"] == []


async def test_a_run_paused_at_a_nested_breakpoint_survives_a_restart(settings, tmp_path):
    log = tmp_path / "log"
    async with running_app(settings) as (_app, client):
        await add_breakpoint(client, "tally", "bp-looped")
        run_id = await started(client, "bp-looped", log)
        assert await paused_at(client, run_id) == "rounds[0].tally"
        await release(client, run_id)
        assert await paused_at(client, run_id) == "rounds[1].tally"

    async with running_app(settings) as (_app, client):
        record = await wait_status(client, run_id, {"paused"})
        assert record["paused_at"] == "rounds[1].tally"
        await release(client, run_id)
        assert await paused_at(client, run_id) == "rounds[2].tally"
        await client.delete("/debug/breakpoints/tally", headers=ADMIN)
        await release(client, run_id)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert record["claims"] == 4  # the start and three releases
    # Pass 0 and pass 1's "ask" ran before the restart and were not run again.
    assert lines(log) == [
        f"{run_id}:rounds[{i}].{step} 1" for i in range(3) for step in ("ask", "tally")
    ]
