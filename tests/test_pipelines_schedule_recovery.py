"""A schedule tick whose run could not be stored after the tick was taken (the process
died, or the store refused the write) is not lost: the taken tick is recorded as firing
in the transaction that takes it, and a worker fires it later, exactly once.

The store's refusal is real: a trigger the test adds (SQLite's RAISE, PostgreSQL's
PL/pgSQL exception) makes every insert into the runs table fail, as a full disk or a
corrupt page would, between the transaction that takes the tick and the one that
stores its run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, db_execute, db_rows, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, pipelines_settings, write_pipelines
from tests.test_pipelines_schedules import add, runs_of, wait_schedule

REFUSE_RUNS = {
    "sqlite": [
        "CREATE TRIGGER refuse_runs BEFORE INSERT ON pipelines_runs "
        "BEGIN SELECT RAISE(ABORT, 'the store refuses the write'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_runs() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the store refuses the write'; END $$",
        "CREATE TRIGGER refuse_runs BEFORE INSERT ON pipelines_runs "
        "FOR EACH ROW EXECUTE FUNCTION refuse_runs()",
    ],
}
ACCEPT_RUNS = {
    "sqlite": ["DROP TRIGGER refuse_runs"],
    "postgresql": ["DROP TRIGGER refuse_runs ON pipelines_runs", "DROP FUNCTION refuse_runs()"],
}


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Any:
    directory = write_pipelines(tmp_path, "testing", PIPELINES_SOURCE)
    # A short lease: a fire left unfinished is taken over after it.
    return pipelines_settings(make_settings, directory, lease_seconds=1)


async def sql(url: str, *statements: str) -> None:
    """Run ``statements`` on a connection of their own. On SQLite off the event loop:
    the app's store works on it, and blocking it would hold up the transaction whose
    write lock this one waits for."""
    if url.startswith("sqlite"):
        await asyncio.to_thread(asyncio.run, db_execute(url, *statements))
    else:
        await db_execute(url, *statements)


async def wait_runs(client: Any, predicate: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        found = await runs_of(client, "three")
        if predicate(found):
            return found
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


async def test_a_taken_tick_whose_run_was_not_stored_fires_exactly_once_after_recovery(
    settings, store_url
):
    dialect = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    async with running_app(settings) as (_app, client):
        created = await add(
            client, id="tick", pipeline_id="three", interval_seconds=2, input={"n": 1}
        )
        first_tick = (await created.get_json())["next_fire_ms"]
        await sql(store_url, *REFUSE_RUNS[dialect])
        # The tick is taken (next_fire_ms moved on) but its run cannot be stored.
        await wait_schedule(client, lambda s: s["next_fire_ms"] > first_tick)
        assert await runs_of(client, "three") == []
    # The gateway stopped with the tick taken and no run; the store works again.
    await sql(store_url, *ACCEPT_RUNS[dialect])
    async with running_app(settings) as (_app, client):
        found = await wait_runs(
            client, lambda runs: first_tick in {r["trigger"]["tick_ms"] for r in runs}
        )
        assert (await client.delete("/schedules/tick", headers=ADMIN)).status_code == 200
        found = await runs_of(client, "three")
    ticks = Counter(r["trigger"]["tick_ms"] for r in found)
    assert ticks[first_tick] == 1 and set(ticks.values()) == {1}
    # Every tick taken has its outcome, none is left firing, each fired tick has its run.
    fires = await db_rows(
        store_url, "SELECT tick_ms, outcome, run_id FROM pipelines_schedule_fires"
    )
    assert fires and {outcome for _t, outcome, _r in fires} == {"fired"}
    assert {t: r for t, _o, r in fires} == {r["trigger"]["tick_ms"]: r["id"] for r in found}
