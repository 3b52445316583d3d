"""Approval and wait steps nested in branch, parallel and loop steps: the run waits
naming the nested step's path, approve / deny / resume continue it, and nested steps
that completed are replayed from the store, not run again (also after a restart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, running_app
from tests.pipelines_fixtures import NOTED_STEP, pipelines_settings, write_pipelines
from tests.test_pipelines_api import TERMINAL, assert_error, event_types, start, wait_status

# Runs, schedules, keys and events are stored: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

NESTED_SOURCE = (
    """
from pathlib import Path

from pydantic import BaseModel, Field

from plugins.pipelines.definition import Pipeline, approval, branch, code, loop, parallel, wait


class Reply(BaseModel):
    text: str = Field(..., min_length=2)


"""
    + NOTED_STEP
    + """

BRANCHED = Pipeline(
    id="branched",
    steps=[
        code("draft", noted("draft")),
        branch(
            "review",
            lambda c: c.input.get("careful", True),
            then=[
                code("prepare", noted("prepare")),
                approval("approve", "ok?"),
                code("after", noted("after")),
            ],
            otherwise=[code("quick", noted("quick"))],
        ),
        code("publish", lambda c: {"review": c.results["review"]["results"]}),
    ],
)

LOOPED = Pipeline(
    id="looped",
    steps=[
        loop(
            "rounds",
            [code("ask", noted("ask")), wait("reply", schema=Reply, prompt="say something")],
            max=2,
        ),
    ],
)

def shaky(ctx):
    noted("shaky")(ctx)
    raise RuntimeError("shaky on purpose")


TOLERANT = Pipeline(
    id="tolerant",
    steps=[
        branch(
            "inner",
            lambda c: True,
            then=[code("shaky", shaky, continue_on_error=True), wait("more")],
        ),
        code("end", lambda c: c.results["shaky"]),
    ],
)

MIXED = Pipeline(
    id="mixed",
    steps=[
        parallel("fan", {"a": [approval("gate", "?")], "b": [code("broken", shaky)]}),
        code("never", noted("never")),
    ],
)

FANNED = Pipeline(
    id="fanned",
    steps=[
        parallel(
            "both",
            {
                "a": [approval("gate_a", "a?")],
                "b": [code("work", noted("work")), approval("gate_b", "b?")],
                "c": [code("solo", noted("solo"))],
            },
        ),
        code("done", lambda c: c.results["both"]),
    ],
)
"""
)


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    return write_pipelines(tmp_path, "nested", NESTED_SOURCE)


@pytest.fixture
def settings(make_settings: Any, pipelines_dir: Path) -> Any:
    return pipelines_settings(make_settings, pipelines_dir)


@pytest.fixture
async def client(settings: Any) -> Any:
    async with running_app(settings) as (_app, test_client):
        yield test_client


async def started(client: Any, pipeline: str, log: Path, **extra: Any) -> str:
    response = await start(client, pipeline, {"input": {"log": str(log), **extra}})
    assert response.status_code == 202
    return str((await response.get_json())["runId"])


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


async def test_an_approval_nested_in_a_branch_waits_and_continues_without_rerunning(
    client, tmp_path
):
    log = tmp_path / "log"
    run_id = await started(client, "branched", log)
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["type"] == "approval"
    assert record["waiting_for"]["step"] == "review.approve"
    pending = await (await client.get("/approvals", headers=ADMIN)).get_json()
    assert [(a["run_id"], a["step_id"]) for a in pending["approvals"]] == [
        (run_id, "review.approve")
    ]
    assert lines(log) == [f"{run_id}:draft 1", f"{run_id}:review.prepare 1"]

    approved = await client.post(f"/runs/{run_id}/approve", json={"reason": "fine"}, headers=ADMIN)
    assert approved.status_code == 200
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    # "prepare" completed before the run waited: it was replayed, not run again.
    assert lines(log) == [
        f"{run_id}:draft 1",
        f"{run_id}:review.prepare 1",
        f"{run_id}:review.after 1",
    ]
    results = record["output"]["review"]
    assert results["prepare"] == {"step": "prepare", "iteration": 0}
    assert results["approve"]["decision"] == "approved"
    assert [s["step_id"] for s in record["steps"]] == [
        "draft",
        "review.prepare",
        "review.approve",
        "review.after",
        "review",
        "publish",
    ]
    types = await event_types(client, run_id)
    assert types.count("approval.requested") == 1 and types[-1] == "run.completed"


async def test_a_denied_nested_approval_fails_the_run_naming_the_path(client, tmp_path):
    log = tmp_path / "log"
    run_id = await started(client, "branched", log)
    await wait_status(client, run_id, {"waiting"})
    denied = await client.post(f"/runs/{run_id}/deny", json={"reason": "no"}, headers=ADMIN)
    assert denied.status_code == 200
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "failed"
    assert record["error"]["step"] == "review" and record["error"]["path"] == "review.approve"
    assert "denied" in record["error"]["message"]
    assert f"{run_id}:review.after 1" not in lines(log)


async def test_the_branch_not_taken_needs_no_approval(client, tmp_path):
    log = tmp_path / "log"
    run_id = await started(client, "branched", log, careful=False)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed"
    assert record["output"] == {"review": {"quick": {"step": "quick", "iteration": 0}}}


async def test_a_wait_nested_in_a_loop_waits_once_per_pass_and_checks_its_schema(client, tmp_path):
    log = tmp_path / "log"
    run_id = await started(client, "looped", log)
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["type"] == "input"
    assert record["waiting_for"]["step"] == "rounds[0].reply"
    assert record["waiting_for"]["schema"]["required"] == ["text"]

    bad = await client.post(f"/runs/{run_id}/resume", json={"input": {"text": ""}}, headers=ADMIN)
    assert bad.status_code == 422
    assert_error(await bad.get_json(), "validation_failed")
    assert (await wait_status(client, run_id, {"waiting"}))["waiting_for"]["step"] == (
        "rounds[0].reply"
    )

    ok = await client.post(f"/runs/{run_id}/resume", json={"input": {"text": "hi"}}, headers=ADMIN)
    assert ok.status_code == 200
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["step"] == "rounds[1].reply"
    await client.post(f"/runs/{run_id}/resume", json={"input": {"text": "bye"}}, headers=ADMIN)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert record["output"]["iterations"] == 2
    assert [p["reply"] for p in record["output"]["results"]] == [{"text": "hi"}, {"text": "bye"}]
    # Each pass's "ask" ran once, with a key of its own.
    assert lines(log) == [f"{run_id}:rounds[0].ask 1", f"{run_id}:rounds[1].ask 1"]


async def test_gates_in_parallel_branches_are_asked_one_at_a_time(client, tmp_path):
    log = tmp_path / "log"
    run_id = await started(client, "fanned", log)
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["step"] == "both.gate_a"
    # The sibling branches ran up to their own gate or their end before the run waited.
    assert sorted(lines(log)) == sorted([f"{run_id}:both.work 1", f"{run_id}:both.solo 1"])
    await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["step"] == "both.gate_b"
    await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed", record
    assert set(record["output"]) == {"a", "b", "c"}
    assert record["output"]["b"]["work"] == {"step": "work", "iteration": 0}
    assert len(lines(log)) == 2  # nothing ran twice


async def test_a_nested_wait_survives_a_restart_and_completed_passes_are_not_rerun(
    settings, tmp_path
):
    log = tmp_path / "log"
    async with running_app(settings) as (_app, client):
        run_id = await started(client, "looped", log)
        await wait_status(client, run_id, {"waiting"})
        await client.post(f"/runs/{run_id}/resume", json={"input": {"text": "one"}}, headers=ADMIN)
        record = await wait_status(client, run_id, {"waiting"})
        assert record["waiting_for"]["step"] == "rounds[1].reply"

    async with running_app(settings) as (_app, client):
        await client.post(f"/runs/{run_id}/resume", json={"input": {"text": "two"}}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert [p["reply"]["text"] for p in record["output"]["results"]] == ["one", "two"]
        assert record["claims"] == 3
    assert lines(log) == [f"{run_id}:rounds[0].ask 1", f"{run_id}:rounds[1].ask 1"]


async def test_a_tolerated_nested_failure_is_replayed_not_rerun(client, tmp_path):
    log = tmp_path / "log"
    run_id = await started(client, "tolerant", log)
    record = await wait_status(client, run_id, {"waiting"})
    assert record["waiting_for"]["step"] == "inner.more"
    failed = {s["step_id"]: s for s in record["steps"]}["inner.shaky"]
    assert failed["status"] == "failed" and "shaky on purpose" in failed["error"]
    await client.post(f"/runs/{run_id}/resume", json={"input": {"x": 1}}, headers=ADMIN)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "completed"
    assert record["output"] == {"error": "RuntimeError: shaky on purpose"}
    assert lines(log) == [f"{run_id}:inner.shaky 1"]


async def test_a_failing_parallel_branch_wins_over_a_gate_in_another(client, tmp_path):
    log = tmp_path / "log"
    run_id = await started(client, "mixed", log)
    record = await wait_status(client, run_id, TERMINAL)
    assert record["status"] == "failed"
    assert record["error"]["step"] == "fan" and record["error"]["path"] == "fan.broken"
    assert lines(log) == [f"{run_id}:fan.broken 1"]
    pending = await (await client.get("/approvals", headers=ADMIN)).get_json()
    assert pending["approvals"] == []
