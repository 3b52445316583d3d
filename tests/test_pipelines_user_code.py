"""User code cannot end the gateway (real ``gateway serve`` processes): a step or a
predicate that calls ``sys.exit`` or raises ``KeyboardInterrupt`` fails its step (retries
apply) and the process stays up; a pipelines module that exits at import is a load error
at start and on reload; a run whose step kills its process each time (``os._exit``)
fails with ``run_crashed_repeatedly`` after ``max_crashed_claims`` claims."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN
from tests.pipelines_fixtures import shared_state_config
from tests.test_pipelines_durability import until

# Runs are claimed, leased and resumed through the store: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

TERMINAL = {"completed", "failed", "cancelled"}

EXITING_STEPS = """
import asyncio
import os
import sys

from plugins.pipelines.definition import Pipeline, code, parallel

RETRY = {"retries": 1, "backoff_seconds": 0.01}


def exits(ctx):
    sys.exit(3)


async def exits_async(ctx):
    await asyncio.sleep(0)
    sys.exit(3)


def interrupts(ctx):
    raise KeyboardInterrupt


def exits_in_when(ctx):
    sys.exit(4)


def ok(ctx):
    return {"ok": True}


def dies(ctx):
    os._exit(7)


PIPELINES = [
    Pipeline(id="exit-sync", steps=[code("exit", exits, **RETRY)]),
    Pipeline(id="exit-async", steps=[code("exit", exits_async, **RETRY)]),
    Pipeline(id="exit-process", steps=[code("exit", exits, isolation="process", **RETRY)]),
    Pipeline(id="interrupt", steps=[code("interrupt", interrupts, **RETRY)]),
    Pipeline(
        id="exit-when",
        steps=[
            parallel(
                "both",
                {"a": [code("guarded", ok, when=exits_in_when)], "b": [code("other", ok)]},
            )
        ],
    ),
    Pipeline(id="dies", steps=[code("die", dies)]),
]
"""


def config_for(tmp_path: Path, **section: Any) -> dict[str, Any]:
    return shared_state_config(tmp_path, "exiting", EXITING_STEPS, **section)


def finished(url: str, run_id: str) -> dict[str, Any] | None:
    record: dict[str, Any] = httpx.get(f"{url}/runs/{run_id}", headers=ADMIN, timeout=10).json()
    return record if record["status"] in TERMINAL else None


def events(url: str, run_id: str) -> list[dict[str, Any]]:
    page = httpx.get(f"{url}/runs/{run_id}/events?format=json", headers=ADMIN, timeout=10)
    found: list[dict[str, Any]] = page.json()["events"]
    return found


@pytest.mark.timeout(180)
def test_a_step_that_exits_fails_its_step_with_retries_and_the_gateway_stays_up(
    live_server, tmp_path
):
    server = live_server(config=config_for(tmp_path))
    expected = {
        "exit-sync": ("exit", "SystemExit: 3", True),
        "exit-async": ("exit", "SystemExit: 3", True),
        "exit-process": ("exit", "SystemExit: 3", True),
        "interrupt": ("interrupt", "KeyboardInterrupt", True),
        "exit-when": ("both", "SystemExit: 4", False),
    }
    started = {}
    for pipeline in expected:
        answer = httpx.post(f"{server.url}/pipelines/{pipeline}/start", json={}, headers=ADMIN)
        assert answer.status_code == 202, answer.text
        started[pipeline] = answer.json()["runId"]
    for pipeline, (step, message, retried) in expected.items():
        run_id = started[pipeline]
        record = until(lambda r=run_id: finished(server.url, r), timeout=90)
        assert record["status"] == "failed", record
        assert record["error"]["step"] == step
        assert record["error"]["message"].endswith(message), record["error"]
        types = [e["type"] for e in events(server.url, run_id)]
        assert types.count("step.retry") == (1 if retried else 0), types
        assert types[-1] == "run.failed"
    assert server.proc.poll() is None, server.log()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


EXITS_AT_IMPORT = "import sys\n\nsys.exit()\n"
GOOD = """
from plugins.pipelines.definition import Pipeline, code


def hello(ctx):
    return {"hello": True}


GOOD = Pipeline(id="good", steps=[code("hello", hello)])
"""


@pytest.mark.timeout(120)
def test_a_module_that_exits_at_import_is_a_load_error_at_start_and_on_reload(
    live_server, tmp_path
):
    config = config_for(tmp_path)
    directory = Path(config["plugins"]["pipelines"]["directory"])
    (directory / "exiting.py").unlink()
    (directory / "good.py").write_text(GOOD)
    (directory / "exits_at_start.py").write_text(EXITS_AT_IMPORT)
    server = live_server(config=config)
    listed = httpx.get(f"{server.url}/pipelines", headers=ADMIN, timeout=10).json()
    assert [p["id"] for p in listed["pipelines"]] == ["good"]
    assert listed["errors"] == {"exits_at_start.py": "SystemExit"}

    (directory / "exits_on_reload.py").write_text("raise SystemExit(5)\n")
    (directory / "interrupts_on_reload.py").write_text("raise KeyboardInterrupt\n")
    reloaded = httpx.post(f"{server.url}/gateway/reload", headers=ADMIN, timeout=30)
    assert reloaded.status_code == 200, reloaded.text
    report = reloaded.json()["plugins"]["pipelines"]
    assert report["status"] == "error"
    assert report["pipelines"] == ["good"]
    assert report["errors"] == {
        "exits_at_start.py": "SystemExit",
        "exits_on_reload.py": "SystemExit: 5",
        "interrupts_on_reload.py": "KeyboardInterrupt",
    }
    assert server.proc.poll() is None, server.log()
    run = httpx.post(f"{server.url}/pipelines/good/start", json={}, headers=ADMIN).json()
    record = until(lambda: finished(server.url, run["runId"]))
    assert record["status"] == "completed"
    assert record["output"] == {"hello": True}


@pytest.mark.timeout(180)
def test_a_run_that_kills_its_process_each_time_fails_with_run_crashed_repeatedly(
    live_server, tmp_path
):
    config = config_for(tmp_path, max_crashed_claims=2)
    # The run is started on a gateway that claims none, so the one that dies cannot die
    # before it answered the start (it did, under load: "server disconnected").
    front_config = copy.deepcopy(config)
    front_config["plugins"]["pipelines"]["max_concurrent_runs"] = 0
    front = live_server(config=front_config)
    first = live_server(config=config)
    run_id = httpx.post(f"{front.url}/pipelines/dies/start", json={}, headers=ADMIN).json()["runId"]
    assert first.proc.wait(60) == 7  # the step's os._exit(7) ended the gateway
    # The next process claims the run once its lease lapsed, and dies the same way.
    second = live_server(config=config, wait=False)
    assert second.proc.wait(90) == 7
    # The third refuses a third claim: two claims in a row ended without progress.
    third = live_server(config=config)
    record = until(lambda: finished(third.url, run_id), timeout=60)
    assert record["status"] == "failed"
    assert record["error"]["code"] == "run_crashed_repeatedly"
    assert record["error"]["steps"] == ["die"]
    assert "claimed 2 times in a row without progress in step 'die'" in (record["error"]["message"])
    assert record["claims"] == 2
    types = [e["type"] for e in events(third.url, run_id)]
    assert types.count("run.started") == 2 and types[-1] == "run.failed"
    assert third.proc.poll() is None, third.log()
    assert httpx.get(f"{third.url}/health", timeout=10).status_code == 200
