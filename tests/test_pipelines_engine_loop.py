"""The worker loop's timers, through HTTP: an idle worker reads the store only every
``poll_seconds``, yet approval timeouts and schedule ticks stored by its own process fire
at their time, and a run another process left ``pending`` is claimed within
``poll_seconds``."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.conftest import ADMIN, db_rows, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, pipelines_settings, write_pipelines
from tests.test_pipelines_api import TERMINAL, start, wait_status

SLOW_POLL = 30  # far longer than any wait below: only the timers can make these pass

pytestmark = pytest.mark.usefixtures("store_url")


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


@asynccontextmanager
async def store_locked(url: str) -> AsyncIterator[None]:
    """Another process holds the runs table: on SQLite the file's write lock (a write
    waiting for it fails after ``busy_timeout_ms``), on PostgreSQL ``LOCK TABLE`` (a
    write waits for it: the heartbeat stalls)."""
    if url.startswith("sqlite"):
        locker = sqlite3.connect(sa.engine.make_url(url).database or "", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn, conn.begin() as tx:
            await conn.exec_driver_sql("LOCK TABLE pipelines_runs IN ACCESS EXCLUSIVE MODE")
            yield
            await tx.rollback()
    finally:
        await engine.dispose()


async def test_a_heartbeat_that_fails_or_stalls_keeps_the_lease_from_lapsing(
    make_settings, tmp_path, store_url
):
    """The store is locked by another process across one of the worker's heartbeats,
    with a poll far longer than the lease. On SQLite that heartbeat fails (busy) and is
    tried again soon; on PostgreSQL it waits for the lock and then renews. Either way
    the running run's lease never lapses (another worker would otherwise take the run
    over while it still runs here)."""
    directory = write_pipelines(tmp_path, "held", HELD_SOURCE)
    section = {"directory": str(directory), "poll_seconds": SLOW_POLL, "lease_seconds": 3}
    settings = make_settings(storage={"busy_timeout_ms": 100}, plugins={"pipelines": section})
    async with running_app(settings) as (_app, client):
        response = await start(client, "held", {"input": {}})
        run_id = (await response.get_json())["runId"]

        async def lease() -> tuple[int | None, int]:
            rows = await db_rows(
                store_url, f"SELECT lease_expires_ms FROM pipelines_runs WHERE id = '{run_id}'"
            )
            return (rows[0][0] if rows else None), int(time.time() * 1000)

        first = None
        while first is None:  # wait for the claim's lease
            first, _ = await lease()
            await asyncio.sleep(0.02)
        while ((await lease())[0] or 0) == first:  # the next heartbeat: beats every 1 s
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.8)  # just before the heartbeat after it
        async with store_locked(store_url):  # that heartbeat fails, or waits
            await asyncio.sleep(0.5)
        lapsed = []
        while (await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json())[
            "status"
        ] == "running":
            expires, now = await lease()
            if expires is not None and expires < now:
                lapsed.append(now - expires)
            await asyncio.sleep(0.05)
        assert lapsed == []
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed" and record["output"] == {"held": True}
