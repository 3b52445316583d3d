"""A run keeps the pipeline definition it started with, across restarts too: the run
record shows it (version, fingerprint), a directory-loaded definition is rebuilt from
its stored module source when the directory changed meanwhile, and a definition that
cannot be had fails the run with ``definition_changed``. Each "restart" is a second app
on the same state directory (its catalog starts empty, like a new process)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from host.api import hookimpl
from plugins.pipelines.definition import Pipeline, approval, code
from tests.conftest import ADMIN, db_execute, db_rows, running_app
from tests.test_pipelines_api import TERMINAL, assert_error, start, wait_status

SOURCE = """
from pathlib import Path

from plugins.pipelines.definition import Pipeline, approval, code

MARK = {mark!r}
{prelude}

GATED = Pipeline(
    id="versioned",
    version={version!r},
    steps=[
        code("before", lambda c: {{"mark": MARK}}),
        approval("review", "ok?"),
        code("after", lambda c: {{"mark": MARK, "before": c.results["before"]["mark"]}}),
    ],
)
"""


def write(directory: Path, version: str, mark: str, prelude: str = "") -> str:
    text = SOURCE.format(version=version, mark=mark, prelude=prelude)
    (directory / "versioned.py").write_text(text)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# Runs, their definitions and the upgrade of an older store, on SQLite and PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines"
    path.mkdir()
    return path


@pytest.fixture
def settings(make_settings: Any, pipelines_dir: Path) -> Any:
    return make_settings(
        plugins={"pipelines": {"directory": str(pipelines_dir), "poll_seconds": 0.05}}
    )


async def started_and_waiting(client: Any) -> dict[str, Any]:
    response = await start(client, "versioned")
    assert response.status_code == 202
    run_id = (await response.get_json())["runId"]
    return await wait_status(client, run_id, {"waiting"})


async def test_the_run_record_shows_the_definition_the_run_started_with(
    settings, pipelines_dir, store_url
):
    fingerprint = write(pipelines_dir, "7", "one")
    async with running_app(settings) as (_app, client):
        record = await started_and_waiting(client)
        assert record["definition"] == {
            "version": "7",
            "fingerprint": fingerprint,
            "origin": "directory",
            "source": "versioned.py",
        }
        assert record["pipeline_version"] == "7"
        listed = await (await client.get("/runs?pipeline=versioned", headers=ADMIN)).get_json()
        assert listed["runs"][0]["definition"] == record["definition"]
        second = await started_and_waiting(client)
        assert second["definition"] == record["definition"]
    # Two runs of one definition store its source once.
    rows = await db_rows(store_url, "SELECT digest, path FROM pipelines_definition_sources")
    assert rows == [(fingerprint.removeprefix("sha256:"), str(pipelines_dir / "versioned.py"))]


async def test_a_run_resumed_after_a_restart_keeps_its_definition_when_the_file_changed(
    settings, pipelines_dir
):
    old = write(pipelines_dir, "1", "old")
    async with running_app(settings) as (_app, client):
        run_id = (await started_and_waiting(client))["id"]

    new = write(pipelines_dir, "2", "new")
    async with running_app(settings) as (_app, client):
        detail = await (await client.get("/pipelines/versioned", headers=ADMIN)).get_json()
        assert detail["version"] == "2"
        approved = await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        assert approved.status_code == 200
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert record["output"] == {"mark": "old", "before": "old"}
        assert record["definition"]["version"] == "1"
        assert record["definition"]["fingerprint"] == old
        # A new run uses the current definition.
        fresh = (await started_and_waiting(client))["id"]
        await client.post(f"/runs/{fresh}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, fresh, TERMINAL)
        assert record["output"] == {"mark": "new", "before": "new"}
        assert record["definition"]["fingerprint"] == new


async def test_a_run_continues_from_its_stored_source_after_the_file_was_removed(
    settings, pipelines_dir
):
    write(pipelines_dir, "1", "gone")
    async with running_app(settings) as (_app, client):
        run_id = (await started_and_waiting(client))["id"]

    (pipelines_dir / "versioned.py").unlink()
    async with running_app(settings) as (_app, client):
        assert (await client.get("/pipelines/versioned", headers=ADMIN)).status_code == 404
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed", record
        assert record["output"] == {"mark": "gone", "before": "gone"}


async def test_a_stored_source_that_no_longer_loads_fails_the_run_with_definition_changed(
    settings, pipelines_dir
):
    # The first definition reads a file next to it when it is imported.
    (pipelines_dir / "mark.txt").write_text("from-file")
    prelude = 'MARK = (Path(__file__).parent / "mark.txt").read_text()'
    write(pipelines_dir, "1", "unused", prelude)
    async with running_app(settings) as (_app, client):
        record = await started_and_waiting(client)
        assert record["steps"][0]["output"] == {"mark": "from-file"}
        run_id = record["id"]

    (pipelines_dir / "mark.txt").unlink()
    write(pipelines_dir, "2", "new")
    async with running_app(settings) as (_app, client):
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "failed"
        error = record["error"]
        assert error["code"] == "definition_changed"
        assert "could not be rebuilt" in error["message"]
        assert "FileNotFoundError" in error["message"] and "'1'" in error["message"]
        # Nothing after the gate ran with the other definition.
        assert [s["step_id"] for s in record["steps"]] == ["before"]


async def test_an_in_process_reload_keeps_the_definition_of_runs_in_flight(settings, pipelines_dir):
    old = write(pipelines_dir, "1", "old")
    async with running_app(settings) as (_app, client):
        run_id = (await started_and_waiting(client))["id"]
        write(pipelines_dir, "2", "new")
        assert (await client.post("/gateway/reload", headers=ADMIN)).status_code == 200
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["output"] == {"mark": "old", "before": "old"}
        assert record["definition"]["fingerprint"] == old


async def test_a_step_id_with_a_path_character_is_refused_when_the_file_loads(
    settings, pipelines_dir
):
    write(pipelines_dir, "1", "ok")
    async with running_app(settings) as (_app, client):
        (pipelines_dir / "dotted.py").write_text(
            "from plugins.pipelines.definition import Pipeline, code\n"
            "P = Pipeline(id='dotted', steps=[code('a.b', lambda c: 1)])\n"
        )
        report = await (await client.post("/gateway/reload", headers=ADMIN)).get_json()
        errors = report["plugins"]["pipelines"]["errors"]
        assert "dotted.py" in errors and "'a.b'" in errors["dotted.py"]
        assert (await client.get("/pipelines/dotted", headers=ADMIN)).status_code == 404


class HookPlugin:
    """Registers ``hooked`` through the hook, at a version the test chooses."""

    def __init__(self, version: str, last: Any) -> None:
        self.version = version
        self.last = last

    @staticmethod
    def first(ctx: Any) -> dict[str, bool]:
        return {"first": True}

    @hookimpl
    def gateway_register_pipelines(self, register: Any) -> None:
        steps = [code("first", self.first), approval("gate", "ok?"), code("last", self.last)]
        register("hooked", Pipeline(id="hooked", version=self.version, steps=steps))


def finish_v1(ctx: Any) -> dict[str, str]:
    return {"by": "v1"}


def finish_v2(ctx: Any) -> dict[str, str]:
    return {"by": "v2"}


async def test_a_plugin_pipeline_keeps_running_after_a_restart_when_it_is_unchanged(
    make_settings,
):
    settings = make_settings(plugins={"pipelines": {"poll_seconds": 0.05}})
    async with running_app(settings, extra_plugins=[("hooks", HookPlugin("1", finish_v1))]) as (
        _app,
        client,
    ):
        run_id = (await (await start(client, "hooked")).get_json())["runId"]
        record = await wait_status(client, run_id, {"waiting"})
        definition = record["definition"]
        assert definition["origin"] == "hook" and definition["version"] == "1"
        assert definition["fingerprint"].startswith("code:sha256:")

    async with running_app(settings, extra_plugins=[("hooks", HookPlugin("1", finish_v1))]) as (
        _app,
        client,
    ):
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "completed" and record["output"] == {"by": "v1"}


@pytest.mark.parametrize(
    ("version", "last"), [("2", finish_v1), ("1", finish_v2)], ids=["version", "steps"]
)
async def test_a_changed_plugin_pipeline_fails_the_resumed_run_with_definition_changed(
    make_settings, version, last
):
    settings = make_settings(plugins={"pipelines": {"poll_seconds": 0.05}})
    async with running_app(settings, extra_plugins=[("hooks", HookPlugin("1", finish_v1))]) as (
        _app,
        client,
    ):
        run_id = (await (await start(client, "hooked")).get_json())["runId"]
        started = (await wait_status(client, run_id, {"waiting"}))["definition"]

    async with running_app(settings, extra_plugins=[("hooks", HookPlugin(version, last))]) as (
        _app,
        client,
    ):
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        assert record["status"] == "failed"
        assert record["error"]["code"] == "definition_changed"
        assert started["fingerprint"] in record["error"]["message"]
        assert "registered by a plugin" in record["error"]["message"]
        assert [s["step_id"] for s in record["steps"]] == ["first"]
        assert record["definition"] == started
        # The run is finished: approving again is refused.
        again = await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        assert again.status_code == 409
        assert_error(await again.get_json(), "not_waiting_for_approval")


async def test_a_store_from_before_definitions_were_stored_is_upgraded_and_its_runs_go_on(
    settings, pipelines_dir, store_url
):
    write(pipelines_dir, "1", "old")
    async with running_app(settings) as (_app, client):
        run_id = (await started_and_waiting(client))["id"]
    # Take the store back to what it was before migration 3 of the pipelines namespace.
    await db_execute(
        store_url,
        "ALTER TABLE pipelines_runs DROP COLUMN definition",
        "DROP TABLE pipelines_definition_sources",
        "DROP TABLE pipelines_step_journal",
        "DELETE FROM schema_migrations WHERE namespace = 'pipelines' AND version = 3",
    )

    write(pipelines_dir, "2", "new")
    async with running_app(settings) as (_app, client):
        record = await wait_status(client, run_id, {"waiting"})
        assert record["definition"] is None
        await client.post(f"/runs/{run_id}/approve", json={}, headers=ADMIN)
        record = await wait_status(client, run_id, TERMINAL)
        # Such a run has no stored definition: it goes on with the current one.
        assert record["status"] == "completed"
        assert record["output"] == {"mark": "new", "before": "old"}
        fresh = await started_and_waiting(client)
        assert fresh["definition"]["version"] == "2"
