"""Reloading the pipelines directory does not pile up modules (finding 3 of issue 9):
each reload imports the directory's files again as fresh modules, and the catalog lets
go of the old ones (``sys.modules`` and every other reference) unless an unfinished run
started with their definition; once that run is done, the next reload lets go of it
too. A run waiting across many reloads still finishes with the definition it started
with."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ADMIN, running_app
from tests.test_pipelines_api import TERMINAL, start, wait_status

PREFIX = "gateway_pipelines_"
SOURCE = """
from pydantic import BaseModel

from plugins.pipelines.definition import Pipeline, approval, code

MARK = {mark!r}


class Topic(BaseModel):
    name: str = "x"


GATED = Pipeline(
    id="gated",
    input_model=Topic,
    steps=[
        code("before", lambda c: {{"mark": MARK}}),
        approval("review", "ok?"),
        code("after", lambda c: {{"mark": MARK}}),
    ],
)
"""
STEADY = """
from plugins.pipelines.definition import Pipeline, code

STEADY = Pipeline(id="steady", steps=[code("one", lambda c: 1)])
"""
RELOADS = 25


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines"
    path.mkdir()
    (path / "steady.py").write_text(STEADY)
    return path


def ours(before: set[str]) -> tuple[set[str], set[str]]:
    """Pipeline modules made since ``before``: in ``sys.modules``, and alive at all."""
    gc.collect()
    listed = {name for name in sys.modules if name.startswith(PREFIX)} - before
    alive = {
        obj.__name__
        for obj in gc.get_objects()
        if isinstance(obj, ModuleType) and obj.__name__.startswith(PREFIX)
    }
    return listed, alive - before


async def reload(client: Any) -> None:
    answer = await client.post("/gateway/reload", headers=ADMIN)
    assert answer.status_code == 200, await answer.get_data()
    assert (await answer.get_json())["plugins"]["pipelines"]["status"] == "ok"


async def test_many_reloads_do_not_pile_up_pipeline_modules(make_settings, pipelines_dir):
    before = {name for name in sys.modules if name.startswith(PREFIX)}
    (pipelines_dir / "gated.py").write_text(SOURCE.format(mark="first"))
    settings = make_settings(plugins={"pipelines": {"directory": str(pipelines_dir)}})
    async with running_app(settings) as (_app, client):
        started = await start(client, "gated", {"input": {"name": "t"}})
        run_id = (await started.get_json())["runId"]
        await wait_status(client, run_id, {"waiting"})
        for n in range(RELOADS):
            (pipelines_dir / "gated.py").write_text(SOURCE.format(mark=f"edit {n}"))
            await reload(client)
        listed, alive = ours(before)
        # The current gated.py and steady.py, and the first gated.py its waiting run
        # started with: nothing of the edits in between.
        assert len(listed) == 3, sorted(listed)
        assert alive == listed, sorted(alive - listed)

        approved = await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        assert approved.status_code == 200
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert record["output"] == {"mark": "first"}

        await reload(client)  # the run is done: its definition's module goes too
        listed, alive = ours(before)
        assert len(listed) == 2 and alive == listed, sorted(alive)
        fresh = (await (await start(client, "gated", {"input": {"name": "u"}})).get_json())["runId"]
        await wait_status(client, fresh, {"waiting"})
        await client.post(f"/runs/{fresh}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, fresh, TERMINAL)
        assert record["output"] == {"mark": f"edit {RELOADS - 1}"}
    # A stopped app lets go of every module it imported.
    listed, alive = ours(before)
    assert listed == set() and alive == set(), sorted(alive)
