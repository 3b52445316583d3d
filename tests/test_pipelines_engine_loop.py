"""The worker loop's timers, through HTTP: an idle worker reads the store only every
``poll_seconds``, yet approval timeouts and schedule ticks stored by its own process fire
at their time, and a run another process left ``pending`` is claimed within
``poll_seconds``."""

from __future__ import annotations

import asyncio
import sqlite3
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


HELD_SOURCE = """
import asyncio

from plugins.pipelines.definition import Pipeline, code


async def hold(ctx):
    await asyncio.sleep(6)
    return {"held": True}


HELD = Pipeline(id="held", steps=[code("hold", hold)])
"""


async def test_a_heartbeat_that_fails_is_retried_before_the_lease_lapses(make_settings, tmp_path):
    """The store is locked (another process holds SQLite's write lock) across one of the
    worker's heartbeats, with a poll far longer than the lease: the failed heartbeat is
    tried again soon, so the running run's lease never lapses (another worker would
    otherwise take the run over while it still runs here)."""
    directory = write_pipelines(tmp_path, "held", HELD_SOURCE)
    section = {"directory": str(directory), "poll_seconds": SLOW_POLL, "lease_seconds": 3}
    settings = make_settings(storage={"busy_timeout_ms": 100}, plugins={"pipelines": section})
    db = settings.state_dir / "gateway.db"
    async with running_app(settings) as (_app, client):
        response = await start(client, "held", {"input": {}})
        run_id = (await response.get_json())["runId"]

        def lease() -> tuple[int | None, int]:
            with sqlite3.connect(db, timeout=5) as conn:
                row = conn.execute(
                    "SELECT lease_expires_ms FROM pipelines_runs WHERE id = ?", (run_id,)
                ).fetchone()
            return (row[0] if row else None), int(time.time() * 1000)

        first = None
        while first is None:  # wait for the claim's lease
            first, _ = lease()
            await asyncio.sleep(0.02)
        while (lease()[0] or 0) == first:  # the next heartbeat: beats come every 1 s
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.8)  # just before the heartbeat after it
        locker = sqlite3.connect(db, timeout=5, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # the write lock: that heartbeat fails
        await asyncio.sleep(0.5)
        locker.execute("ROLLBACK")
        locker.close()
        lapsed = []
        while (await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json())[
            "status"
        ] == "running":
            expires, now = lease()
            if expires is not None and expires < now:
                lapsed.append(now - expires)
            await asyncio.sleep(0.05)
        assert lapsed == []
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed" and record["output"] == {"held": True}
