"""The worker loop's timers, through HTTP: an idle worker reads the store only every
``poll_seconds``, yet approval timeouts and schedule ticks stored by its own process fire
at their time, and a run another process left ``pending`` is claimed within
``poll_seconds``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, pipelines_settings, write_pipelines
from tests.test_pipelines_api import TERMINAL, start, wait_status

SLOW_POLL = 30  # far longer than any wait below: only the timers can make these pass


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    return write_pipelines(tmp_path, "testing", PIPELINES_SOURCE)


def settings_with(make_settings: Any, pipelines_dir: Path, **section: Any) -> Any:
    return pipelines_settings(make_settings, pipelines_dir, **section)


async def test_an_approval_timeout_fires_at_its_time_not_at_the_next_poll(
    make_settings, pipelines_dir
):
    settings = settings_with(make_settings, pipelines_dir, poll_seconds=SLOW_POLL)
    async with running_app(settings) as (_app, client):
        began = time.monotonic()
        run_id = (await (await start(client, "timed")).get_json())["runId"]
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert record["output"] == {"decision": "approved"}
        assert time.monotonic() - began < 10


async def test_an_interval_schedule_fires_at_its_time_not_at_the_next_poll(
    make_settings, pipelines_dir
):
    settings = settings_with(make_settings, pipelines_dir, poll_seconds=SLOW_POLL)
    async with running_app(settings) as (_app, client):
        created = await client.post(
            "/schedules",
            json={"id": "tick", "pipeline_id": "three", "interval_seconds": 1, "input": {"n": 1}},
            headers=ADMIN,
        )
        assert created.status_code == 201
        deadline = time.monotonic() + 10
        fired: list[str] = []
        while not fired and time.monotonic() < deadline:
            listed = await (await client.get("/schedules", headers=ADMIN)).get_json()
            fired = [s["last_run_id"] for s in listed["schedules"] if s["last_outcome"] == "fired"]
            await asyncio.sleep(0.05)
        assert fired, listed
        assert (await wait_status(client, fired[0], TERMINAL))["status"] == "completed"


async def test_a_run_left_pending_by_another_process_is_claimed_within_poll_seconds(
    make_settings, pipelines_dir
):
    # Two gateways on one state directory; the first never claims (no room at all), so
    # only the second's store poll can find the run the first stored.
    idle = settings_with(make_settings, pipelines_dir, max_concurrent_runs=0, poll_seconds=0.2)
    worker = settings_with(make_settings, pipelines_dir, poll_seconds=0.5)
    async with (
        running_app(idle) as (_idle_app, idle_client),
        running_app(worker) as (_worker_app, worker_client),
    ):
        response = await start(idle_client, "three", {"input": {"n": 1}})
        assert response.status_code == 202
        run_id = (await response.get_json())["runId"]
        began = time.monotonic()
        record = await wait_status(worker_client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert time.monotonic() - began < 0.5 + 2  # one poll, and the run's own steps
        assert record["claims"] == 1
