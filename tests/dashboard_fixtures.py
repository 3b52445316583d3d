"""Shared by the dashboard tests: pipelines to make runs of (one waits for an approval,
one fails), and helpers to start runs and wait for their state over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN
from tests.pipelines_fixtures import write_pipelines

DASHBOARD_PIPELINES = """
from plugins.pipelines.definition import Pipeline, approval, code


def boom(ctx):
    raise RuntimeError("boom")


GATED = Pipeline(
    id="gated",
    steps=[
        code("draft", lambda c: {"text": "draft"}),
        approval("review", "ship it?"),
        code("publish", lambda c: {"done": True}),
    ],
)
FAILING = Pipeline(id="failing", steps=[code("boom", boom)])
"""


def dashboard_config(tmp_path: Path, **dashboard: Any) -> dict[str, Any]:
    directory = write_pipelines(tmp_path, "dash", DASHBOARD_PIPELINES)
    return {
        "plugins": {
            "pipelines": {"directory": str(directory), "poll_seconds": 0.05},
            "dashboard": dashboard,
        }
    }


def dashboard_settings(make_settings: Callable[..., Any], tmp_path: Path, **dashboard: Any) -> Any:
    return make_settings(**dashboard_config(tmp_path, **dashboard))


async def start_run(client: Any, pipeline: str, headers: dict[str, str] = ADMIN) -> str:
    response = await client.post(f"/pipelines/{pipeline}/start", json={}, headers=headers)
    assert response.status_code in (200, 201, 202), await response.get_data()
    run_id: str = (await response.get_json())["runId"]
    return run_id


async def wait_status(client: Any, run_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        response = await client.get(f"/runs/{run_id}", headers=ADMIN)
        seen = (await response.get_json())["status"]
        if seen == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} stayed {seen}, not {status}")
