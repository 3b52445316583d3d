"""Durability against real ``gateway serve`` processes: a run survives SIGKILL and
continues from its last completed step (the step in progress runs again, with the same
``step_key`` and a higher ``attempt``); idempotency keys survive the restart; with
``--workers 2`` on one state directory every run executes once."""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN
from tests.pipelines_fixtures import PIPELINES_SOURCE, shared_state_config

# Runs are claimed, leased and resumed through the store: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

TERMINAL = {"completed", "failed", "cancelled"}


def config_for(tmp_path: Path) -> dict[str, Any]:
    return shared_state_config(tmp_path, "testing", PIPELINES_SOURCE)


def until(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, "condition not reached"
            return value
        time.sleep(0.05)


def run_status(url: str, run_id: str, statuses: set[str]) -> dict[str, Any] | None:
    record: dict[str, Any] = httpx.get(f"{url}/runs/{run_id}", headers=ADMIN, timeout=10).json()
    return record if record["status"] in statuses else None


@pytest.mark.parametrize(
    ("pipeline", "prefix", "recorded"),
    [
        ("durable", "", ["first", "second", "third"]),
        ("durable-nested", "inner.", ["inner.first", "inner.second", "inner", "third"]),
    ],
)
def test_run_continues_from_its_last_completed_step_after_sigkill(
    live_server, tmp_path, pipeline, prefix, recorded
):
    config = config_for(tmp_path)
    gate, counter, keys = tmp_path / "gate", tmp_path / "counter", tmp_path / "keys"
    first = live_server(config=config)
    key = {**ADMIN, "Idempotency-Key": "durable-1"}
    body = {"input": {"gate": str(gate), "counter": str(counter), "keys": str(keys)}}
    started = httpx.post(f"{first.url}/pipelines/{pipeline}/start", json=body, headers=key)
    assert started.status_code == 202
    run_id = started.json()["runId"]
    # The first step completed and the second is in progress (blocked on the gate).
    until(lambda: counter.exists() and counter.read_text().split() == ["first", "second"])
    assert run_status(first.url, run_id, {"running"}) is not None
    first.stop(signal.SIGKILL)

    gate.touch()
    second = live_server(config=config)
    record = until(lambda: run_status(second.url, run_id, TERMINAL))
    assert record["status"] == "completed", record
    assert record["output"] == {"done": True}
    # "first" ran once; "second" ran again (it had not completed); "third" once.
    assert counter.read_text().split() == ["first", "second", "second"]
    # The re-run saw the same idempotency handle, and knew it was a second attempt.
    assert keys.read_text().splitlines() == [
        f"{run_id}:{prefix}second 1",
        f"{run_id}:{prefix}second 2",
    ]
    assert [s["step_id"] for s in record["steps"]] == recorded
    assert record["claims"] == 2
    # The idempotency key outlived the killed process.
    again = httpx.post(f"{second.url}/pipelines/{pipeline}/start", json=body, headers=key)
    assert again.json()["runId"] == run_id and again.json()["created"] is False
    events = httpx.get(f"{second.url}/runs/{run_id}/events?format=json", headers=ADMIN).json()
    types = [e["type"] for e in events["events"]]
    assert types.count("run.started") == 2 and types[-1] == "run.completed"
    assert [e["seq"] for e in events["events"]] == list(range(1, len(types) + 1))


def test_waiting_runs_and_breakpoints_survive_a_restart(live_server, tmp_path):
    config = config_for(tmp_path)
    first = live_server(config=config)
    waiting = httpx.post(f"{first.url}/pipelines/gated/start", json={}, headers=ADMIN).json()
    until(lambda: run_status(first.url, waiting["runId"], {"waiting"}))
    added = httpx.post(f"{first.url}/debug/breakpoints", json={"step_id": "two"}, headers=ADMIN)
    assert added.status_code == 201
    first.stop(signal.SIGKILL)

    second = live_server(config=config)
    approvals = httpx.get(f"{second.url}/approvals", headers=ADMIN).json()["approvals"]
    assert [a["run_id"] for a in approvals] == [waiting["runId"]]
    paused = httpx.post(
        f"{second.url}/pipelines/three/start", json={"input": {"n": 1}}, headers=ADMIN
    ).json()
    until(lambda: run_status(second.url, paused["runId"], {"paused"}))
    httpx.post(f"{second.url}/runs/{waiting['runId']}/approve", json={}, headers=ADMIN)
    assert until(lambda: run_status(second.url, waiting["runId"], TERMINAL))["status"] == (
        "completed"
    )


@pytest.mark.timeout(120)
def test_two_workers_execute_each_run_once(live_server, tmp_path):
    config = config_for(tmp_path)
    config["plugins"]["pipelines"]["max_concurrent_runs"] = 3
    # A lease long enough that a busy machine never lets one lapse under a live worker.
    config["plugins"]["pipelines"]["lease_seconds"] = 5
    server = live_server(config=config, args=["--workers", "2"])
    counter = tmp_path / "counter"
    gate = tmp_path / "gate"
    gate.touch()
    run_ids = []
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=10) as client:
        for _ in range(8):
            body = {"input": {"gate": str(gate), "counter": str(counter)}}
            response = client.post("/pipelines/durable/start", json=body)
            assert response.status_code == 202
            run_ids.append(response.json()["runId"])
        records = [until(lambda r=r: run_status(server.url, r, TERMINAL)) for r in run_ids]
    assert all(r["status"] == "completed" and r["claims"] == 1 for r in records)
    lines = counter.read_text().split()
    assert lines.count("first") == 8 and lines.count("second") == 8


@pytest.mark.timeout(120)
def test_two_workers_fire_each_schedule_tick_once(live_server, tmp_path):
    config = config_for(tmp_path)
    config["plugins"]["pipelines"]["lease_seconds"] = 5
    server = live_server(config=config, args=["--workers", "2"])
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=10) as client:
        created = client.post(
            "/schedules",
            json={"id": "tick", "pipeline_id": "three", "interval_seconds": 1, "input": {"n": 1}},
        )
        assert created.status_code == 201

        def three_runs() -> list[dict[str, Any]] | None:
            found = client.get("/runs?pipeline=three").json()["runs"]
            return found if len(found) >= 3 else None

        until(three_runs)
        assert client.delete("/schedules/tick").status_code == 200
        found = client.get("/runs?pipeline=three&limit=500").json()["runs"]
    ticks = [r["trigger"]["tick_ms"] for r in found]
    assert len(ticks) == len(set(ticks))
    ordered = sorted(ticks)
    assert all(b - a >= 1000 for a, b in itertools.pairwise(ordered))
