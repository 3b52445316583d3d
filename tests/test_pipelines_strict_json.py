"""Step outputs holding NaN or Infinity: the step fails naming where, and the run record,
the run list and the events page stay strict JSON (what browsers, Go and jq parse)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, running_app
from tests.pipelines_fixtures import pipelines_settings, write_pipelines
from tests.test_pipelines_api import TERMINAL

# Runs, schedules, keys and events are stored: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
import math

from plugins.pipelines.definition import Pipeline, branch, code

TOP = Pipeline(
    id="nan-top",
    steps=[code("score", lambda c: {"x": math.nan}), code("never", lambda c: 1)],
)

NESTED = Pipeline(
    id="inf-nested",
    steps=[
        branch(
            "pick",
            lambda c: True,
            then=[code("inner", lambda c: {"scores": [1.0, -math.inf], "odd key": 1})],
        ),
    ],
)

KEYED = Pipeline(
    id="nan-keyed",
    steps=[code("odd", lambda c: {"a b": {"c": float("nan")}})],
)

TOLERATED = Pipeline(
    id="nan-tolerated",
    steps=[
        code("score", lambda c: {"x": math.inf}, continue_on_error=True, retries=2),
        code("last", lambda c: {"ok": True}),
    ],
)

RUN_OUTPUT = Pipeline(
    id="nan-run-output",
    steps=[code("one", lambda c: {"v": 1})],
    output=lambda c: {"ratio": math.nan},
)
"""


def strict(raw: bytes) -> Any:
    """Parse as strict JSON: NaN, Infinity and -Infinity are refused."""

    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(raw, parse_constant=refuse)


@pytest.fixture
async def client(make_settings: Any, tmp_path: Path) -> Any:
    directory = write_pipelines(tmp_path, "strict", SOURCE)
    async with running_app(pipelines_settings(make_settings, directory)) as (_app, test_client):
        yield test_client


async def finished(client: Any, pipeline: str) -> dict[str, Any]:
    response = await client.post(
        f"/pipelines/{pipeline}/run", json={"wait_seconds": 15}, headers=ADMIN
    )
    assert response.status_code == 200
    record: dict[str, Any] = strict(await response.get_data())
    assert record["status"] in TERMINAL
    return record


async def assert_strict_everywhere(client: Any, run_id: str) -> None:
    for url in (f"/runs/{run_id}", "/runs?limit=500", f"/runs/{run_id}/events?format=json"):
        response = await client.get(url, headers=ADMIN)
        assert response.status_code == 200
        strict(await response.get_data())


@pytest.mark.parametrize(
    ("pipeline", "step", "path"),
    [
        ("nan-top", "score", "$.x"),
        ("inf-nested", "pick", "$.scores[1]"),
        ("nan-keyed", "odd", '$["a b"].c'),
    ],
)
async def test_a_step_output_with_a_non_finite_number_fails_the_step_naming_its_path(
    client, pipeline, step, path
):
    record = await finished(client, pipeline)
    message = f"step output is not JSON: non-finite number at {path}"
    assert record["status"] == "failed"
    assert record["error"]["step"] == step
    assert record["error"]["message"] == message
    failed = [s for s in record["steps"] if s["status"] == "failed"]
    assert failed and failed[0]["error"] == message and failed[0]["attempts"] == 1
    assert [s["step_id"] for s in record["steps"] if s["status"] == "completed"] == []
    await assert_strict_everywhere(client, record["id"])


async def test_a_tolerated_non_finite_output_is_recorded_as_a_failure_not_retried(client):
    record = await finished(client, "nan-tolerated")
    assert record["status"] == "completed" and record["output"] == {"ok": True}
    steps = {s["step_id"]: s for s in record["steps"]}
    assert steps["score"]["status"] == "failed" and steps["score"]["attempts"] == 1
    assert steps["score"]["error"] == "step output is not JSON: non-finite number at $.x"
    await assert_strict_everywhere(client, record["id"])


async def test_a_run_output_with_a_non_finite_number_fails_the_run(client):
    record = await finished(client, "nan-run-output")
    assert record["status"] == "failed" and record["output"] is None
    assert record["error"]["message"] == "run output is not JSON: non-finite number at $.ratio"
    await assert_strict_everywhere(client, record["id"])
