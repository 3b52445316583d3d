"""A cancel reaches a step running in another process: two real ``gateway serve``
processes on one state directory, one claiming runs, the other (``max_concurrent_runs =
0``) answering the cancel. The step is stopped (it notes so in a ``finally``), and
nothing is stored for the run after its ``run.cancelled`` event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN
from tests.test_pipelines_durability import config_for, run_status, until

# Runs are claimed, leased and resumed through the store: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
import asyncio
import pathlib

from plugins.pipelines.definition import Pipeline, code


def noted(ctx, how):
    pathlib.Path(ctx.input["marker"]).write_text(how)


async def streaming(ctx):
    try:
        while True:
            await ctx.delta("tick")
            await asyncio.sleep(0.02)
    except BaseException as exc:
        noted(ctx, type(exc).__name__)
        raise


async def quiet(ctx):
    # Writes nothing while it runs: only the worker's own check can stop it.
    try:
        while True:
            await asyncio.sleep(0.02)
    except BaseException as exc:
        noted(ctx, type(exc).__name__)
        raise


STREAMING = Pipeline(id="streaming", steps=[code("stream", streaming), code("after", lambda c: 1)])
QUIET = Pipeline(id="quiet", steps=[code("sleep", quiet), code("after", lambda c: 1)])
"""


def two_gateways(live_server: Any, tmp_path: Path) -> tuple[Any, Any]:
    config = config_for(tmp_path)
    (tmp_path / "pipelines" / "cancelling.py").write_text(SOURCE)
    # A lease so long that its heartbeat (a third of it) cannot be what stops the step.
    config["plugins"]["pipelines"]["lease_seconds"] = 120
    worker = live_server(config=config)
    config["plugins"]["pipelines"]["max_concurrent_runs"] = 0
    front = live_server(config=config)
    return worker, front


def events_of(url: str, run_id: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{url}/runs/{run_id}/events?format=json&limit=1000", headers=ADMIN)
    events: list[dict[str, Any]] = page.json()["events"]
    return events


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pipeline", ["streaming", "quiet"])
def test_a_cancel_stops_a_step_running_in_another_process_and_nothing_follows_it(
    live_server, tmp_path, pipeline
):
    worker, front = two_gateways(live_server, tmp_path)
    marker = tmp_path / "marker"
    started = httpx.post(
        f"{front.url}/pipelines/{pipeline}/start",
        json={"input": {"marker": str(marker)}},
        headers=ADMIN,
    )
    assert started.status_code == 202
    run_id = started.json()["runId"]
    # The other process claimed it and the step is under way.
    until(lambda: run_status(front.url, run_id, {"running"}))
    until(lambda: "step.started" in {e["type"] for e in events_of(front.url, run_id)})
    if pipeline == "streaming":
        until(lambda: [e["type"] for e in events_of(front.url, run_id)].count("step.delta") >= 3)

    cancelled = httpx.post(
        f"{front.url}/runs/{run_id}/cancel", json={"reason": "enough"}, headers=ADMIN
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"

    # The step in the other process was stopped (its task was cancelled, or its next
    # write refused) ...
    until(marker.exists, timeout=20)
    assert marker.read_text() in {"CancelledError", "LostRun"}
    # ... and nothing was stored after the cancel: not a delta, not its outcome.
    for url in (front.url, worker.url):
        events = events_of(url, run_id)
        assert events[-1]["type"] == "run.cancelled", [e["type"] for e in events[-5:]]
        assert [e["type"] for e in events].count("run.cancelled") == 1
        record = httpx.get(f"{url}/runs/{run_id}", headers=ADMIN).json()
        assert record["status"] == "cancelled" and record["steps"] == []
    # Both gateways are still healthy and the worker takes new runs.
    again = httpx.post(
        f"{front.url}/pipelines/three/start", json={"input": {"n": 1}}, headers=ADMIN
    ).json()
    done = until(lambda: run_status(front.url, again["runId"], {"completed", "failed"}))
    assert done["status"] == "completed"
