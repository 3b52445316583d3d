"""How code steps run: a sync step runs in a worker thread, so it blocks neither requests
nor lease renewal and its ``timeout_seconds`` fails it on time (its thread, which cannot
be stopped, is counted as abandoned until it returns); a step with ``isolation =
"process"`` runs in a step process that is killed on timeout and on cancel, and the pool
goes on serving with a fresh one."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, db_rows, running_app
from tests.pipelines_fixtures import pipelines_settings, write_pipelines
from tests.test_pipelines_durability import until

TERMINAL = {"completed", "failed", "cancelled"}

BLOCKING_STEPS = """
import pathlib
import time

from plugins.pipelines.definition import Pipeline, code


def wait_for_gate(ctx):
    pathlib.Path(ctx.input["started"]).touch()
    gate = pathlib.Path(ctx.input["gate"])
    while not gate.exists():  # blocks its thread, as a sync client call would
        time.sleep(0.01)
    return {"passed": True}


BLOCKING = Pipeline(id="blocking", steps=[code("block", wait_for_gate)])
SYNC_TIMEOUT = Pipeline(
    id="sync-timeout", steps=[code("block", wait_for_gate, timeout_seconds=0.5)]
)
"""

PROCESS_STEPS = """
import os
import pathlib
import time

from plugins.pipelines.definition import Pipeline, code
from tests.pipelines_fixtures import process_probe


def spin(ctx):
    pathlib.Path(ctx.input["pid"]).write_text(str(os.getpid()))
    while True:  # never returns: only killing its process stops it
        time.sleep(0.05)


def whoami(ctx):
    return {
        "pid": os.getpid(),
        "input": ctx.input,
        "step_key": ctx.step_key,
        "attempt": ctx.attempt,
        "seen": sorted(ctx.results),
    }


SPIN_TIMEOUT = Pipeline(
    id="spin-timeout", isolation="process", steps=[code("spin", spin, timeout_seconds=1)]
)
SPIN = Pipeline(id="spin", steps=[code("spin", spin, isolation="process")])
WHOAMI = Pipeline(
    id="whoami",
    isolation="process",
    steps=[code("first", process_probe), code("second", whoami)],
)
"""


def steps_directory(tmp_path: Path) -> Path:
    write_pipelines(tmp_path, "blocking", BLOCKING_STEPS)
    return write_pipelines(tmp_path, "processes", PROCESS_STEPS)


def lease_expiry(url: str, run_id: str) -> int | None:
    sql = f"SELECT lease_expires_ms FROM pipelines_runs WHERE id = '{run_id}'"
    rows = asyncio.run(db_rows(url, sql))
    return None if not rows else rows[0][0]


@pytest.mark.timeout(120)
def test_a_blocking_sync_step_leaves_health_and_lease_renewal_running(
    live_server, tmp_path, store_url
):
    directory = write_pipelines(tmp_path, "blocking", BLOCKING_STEPS)
    server = live_server(
        config={
            "plugins": {
                "pipelines": {"directory": str(directory), "lease_seconds": 1, "poll_seconds": 0.1}
            }
        }
    )
    started, gate = tmp_path / "started", tmp_path / "gate"
    body = {"input": {"started": str(started), "gate": str(gate)}}
    run_id = httpx.post(f"{server.url}/pipelines/blocking/start", json=body, headers=ADMIN).json()[
        "runId"
    ]
    until(started.exists)
    # The step blocks until the gate exists, which is written only once /health answered:
    # with the step on the event loop, this request could not be served.
    assert httpx.get(f"{server.url}/health", timeout=20).status_code == 200
    # The lease (1 s) is renewed while the step still blocks.
    first = until(lambda: lease_expiry(server.store_url, run_id))
    until(lambda: (lease_expiry(server.store_url, run_id) or 0) >= first + 2000)
    gate.touch()
    record = until(
        lambda: (
            r
            if (r := httpx.get(f"{server.url}/runs/{run_id}", headers=ADMIN).json())["status"]
            in TERMINAL
            else None
        )
    )
    assert record["status"] == "completed", record
    assert record["output"] == {"passed": True}
    assert record["claims"] == 1


async def wait_status(client: Any, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = await client.get(f"/runs/{run_id}", headers=ADMIN)
        record: dict[str, Any] = await answer.get_json()
        if record["status"] in TERMINAL or time.monotonic() > deadline:
            assert record["status"] in TERMINAL, record
            return record
        await asyncio.sleep(0.02)


async def eventually(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, "condition not reached"
            return value
        await asyncio.sleep(0.02)


async def metrics(client: Any) -> str:
    return (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()


async def start(client: Any, pipeline: str, run_input: dict[str, Any]) -> str:
    answer = await client.post(
        f"/pipelines/{pipeline}/start", json={"input": run_input}, headers=ADMIN
    )
    assert answer.status_code == 202, await answer.get_data()
    run_id: str = (await answer.get_json())["runId"]
    return run_id


async def test_a_sync_step_past_its_timeout_fails_and_its_thread_is_counted_until_it_returns(
    make_settings, tmp_path, store_url
):
    settings = pipelines_settings(make_settings, steps_directory(tmp_path))
    started, gate = tmp_path / "started", tmp_path / "gate"
    async with running_app(settings) as (_app, client):
        run_id = await start(client, "sync-timeout", {"started": str(started), "gate": str(gate)})
        record = await wait_status(client, run_id)
        assert record["status"] == "failed"
        assert record["error"] == {"message": "step timed out after 0.5 s", "step": "block"}
        assert started.exists()  # it ran, and its thread still waits for the gate
        text = await metrics(client)
        assert "gateway_pipeline_step_threads_abandoned_total 1.0" in text
        assert "gateway_pipeline_step_threads_abandoned_running 1.0" in text
        gate.touch()

        async def returned() -> bool:
            return "gateway_pipeline_step_threads_abandoned_running 0.0" in await metrics(client)

        deadline = time.monotonic() + 30
        while not await returned():
            assert time.monotonic() < deadline, "the abandoned thread never returned"
            await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(180)
async def test_a_process_isolated_step_is_killed_on_timeout_and_on_cancel_and_the_pool_goes_on(
    make_settings, tmp_path, store_url
):
    settings = pipelines_settings(make_settings, steps_directory(tmp_path))
    async with running_app(settings) as (_app, client):
        first = await wait_status(client, await start(client, "whoami", {"n": 1}))
        assert first["status"] == "completed", first
        out = first["output"]
        served_by = out["pid"]
        assert served_by != os.getpid()
        assert out["input"] == {"n": 1} and out["attempt"] == 1
        assert out["step_key"] == f"{first['id']}:second" and out["seen"] == ["first"]
        # A function of an importable module is imported, one of the directory is run from
        # the module's source: both in the same step process.
        probed = first["steps"][0]["output"]
        assert probed == {
            "pid": served_by,
            "module": "tests.pipelines_fixtures",
            "run_id": first["id"],
        }

        timed_pid = tmp_path / "timed.pid"
        run_id = await start(client, "spin-timeout", {"pid": str(timed_pid)})
        record = await wait_status(client, run_id)
        assert record["status"] == "failed"
        assert record["error"] == {"message": "step timed out after 1 s", "step": "spin"}
        timed = int(timed_pid.read_text())
        await eventually(lambda: gone(timed))

        cancelled_pid = tmp_path / "cancelled.pid"
        run_id = await start(client, "spin", {"pid": str(cancelled_pid)})
        await eventually(cancelled_pid.exists)
        cancelled = int(await eventually(cancelled_pid.read_text))
        answer = await client.post(f"/runs/{run_id}/cancel", json={}, headers=ADMIN)
        assert answer.status_code == 200, await answer.get_data()
        await eventually(lambda: gone(cancelled))
        assert (await wait_status(client, run_id))["status"] == "cancelled"

        again = await wait_status(client, await start(client, "whoami", {"n": 2}))
        assert again["status"] == "completed", again
        assert again["output"]["pid"] not in (timed, cancelled, os.getpid())
        text = await metrics(client)
        assert 'gateway_pipeline_step_processes_killed_total{reason="timeout"} 1.0' in text
        assert 'gateway_pipeline_step_processes_killed_total{reason="cancel"} 1.0' in text


LAMBDA_IN_PROCESS = """
from plugins.pipelines.definition import Pipeline, code

BAD = Pipeline(id="bad", isolation="process", steps=[code("anon", lambda ctx: 1)])
"""


async def test_a_process_isolated_lambda_is_refused_when_the_module_loads(make_settings, tmp_path):
    directory = steps_directory(tmp_path)
    (directory / "bad.py").write_text(LAMBDA_IN_PROCESS)
    async with running_app(pipelines_settings(make_settings, directory)) as (_app, client):
        listed = await (await client.get("/pipelines", headers=ADMIN)).get_json()
    assert "bad" not in [p["id"] for p in listed["pipelines"]]
    assert listed["errors"]["bad.py"].startswith(
        "DefinitionError: step 'anon': isolation 'process' needs a function defined at the "
        "top level of a module"
    )
