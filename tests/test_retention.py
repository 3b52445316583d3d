"""Retention: old finished runs (with their steps, approvals and events), stored responses,
log events and expired auth sessions are removed by the background task and by
``gateway db prune``; unfinished runs are kept; a stream resumed from before its oldest
kept event says so (``stream.truncated``); every plugin prunes its own data through
``gateway_prune``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from host.api import Store
from host.context import context
from host.settings import Settings, load_settings
from host.storage import now_ms
from tests.conftest import ADMIN, base_config, db_rows, gateway_cli, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, write_pipelines
from tests.plugins_for_tests.kit import Plugin
from tests.test_event_streams import StreamReader

DAY_MS = 86_400_000
TERMINAL = {"completed", "failed", "cancelled"}


def config(tmp_path: Path, store_url: str | None = None, **retention: Any) -> dict[str, Any]:
    """A config with the test pipelines; on the store ``store_url`` names when it is a
    PostgreSQL one (SQLite in the state directory otherwise)."""
    data = base_config(tmp_path / "state")
    if store_url is not None and store_url.startswith("postgresql"):
        data["storage"] = {"url": store_url}
    directory = write_pipelines(tmp_path, "testing", PIPELINES_SOURCE)
    data["plugins"] = {"pipelines": {"directory": str(directory), "poll_seconds": 0.05}}
    data["events"] = {"heartbeat_seconds": 0.2, "poll_seconds": 0.1}
    data["retention"] = {"enabled": False, **retention}
    return data


def write_config(tmp_path: Path, store_url: str | None = None, **retention: Any) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(config(tmp_path, store_url, **retention)))
    return path


async def run_to(client: Any, pipeline: str, statuses: set[str], **body: Any) -> str:
    started = await client.post(f"/pipelines/{pipeline}/start", json=body, headers=ADMIN)
    assert started.status_code == 202, await started.get_data()
    run_id: str = (await started.get_json())["runId"]
    deadline = asyncio.get_running_loop().time() + 15
    while (await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json())[
        "status"
    ] not in statuses:
        assert asyncio.get_running_loop().time() < deadline, f"{run_id} never reached {statuses}"
        await asyncio.sleep(0.02)
    return run_id


async def stored_response(client: Any, text: str) -> str:
    response = await client.post(
        "/v1/responses", json={"model": "echo", "input": text}, headers=ADMIN
    )
    assert response.status_code == 200, await response.get_data()
    response_id: str = (await response.get_json())["id"]
    return response_id


async def make_history(client: Any, app: Any) -> dict[str, Any]:
    """Three finished runs (the last one streams step deltas), a run waiting for its
    approval, two stored responses, four gateway events, an expired and a live session."""
    finished = [await run_to(client, "three", TERMINAL, input={"n": i}) for i in range(2)]
    finished.append(await run_to(client, "llm-step", TERMINAL))
    waiting = await run_to(client, "gated", {"waiting"})
    responses = [await stored_response(client, f"hello {i}") for i in range(2)]
    for path in ("/gateway/pause", "/gateway/resume") * 2:
        assert (await client.post(path, headers=ADMIN)).status_code == 200
    store = context(app).store
    await store.create_auth_session("a" * 64, "alice", 1, None)  # expired at once
    await store.create_auth_session("b" * 64, "bob", 60 * DAY_MS, None)
    return {"finished": finished, "waiting": waiting, "responses": responses}


async def counts(url: str) -> dict[str, int]:
    tables = {
        "runs": "pipelines_runs",
        "step_results": "pipelines_step_results",
        "step_journal": "pipelines_step_journal",
        "approvals": "pipelines_approvals",
        "events": "gateway_events",
        "responses": "openai_responses",
        "sessions": "gateway_auth_sessions",
    }
    return {k: (await db_rows(url, f"SELECT count(*) FROM {t}"))[0][0] for k, t in tables.items()}


# -- gateway db prune --------------------------------------------------------------------------


async def test_db_prune_removes_what_is_past_its_count_and_keeps_unfinished_runs(
    tmp_path, store_url
):
    path = write_config(
        tmp_path,
        store_url,
        runs_max_count=1,
        responses_max_count=1,
        events_max_count=2,
        batch_size=10,
    )
    state = store_url
    async with running_app(load_settings(str(path))) as (app, client):
        made = await make_history(client, app)
    before = await counts(state)

    dry = gateway_cli("db", "prune", "--dry-run", "--config", str(path), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert await counts(state) == before  # a dry run removes nothing
    lines = dry.stdout.splitlines()
    assert lines[-1].startswith("would remove ") and lines[-1].endswith(" rows (dry run)")
    assert any(line.split() == ["pipelines", "runs", "2"] for line in lines)
    assert any(line.split() == ["openai_compat", "responses", "1"] for line in lines)
    assert any(line.split() == ["control", "events", "2"] for line in lines)
    assert any(line.split() == ["host", "auth_sessions", "1"] for line in lines)

    done = gateway_cli("db", "prune", "--config", str(path), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False and report["errors"] == {}
    assert report["removed"]["pipelines"]["runs"] == 2
    assert report["removed"]["pipelines"]["events"] > 0
    assert report["removed"]["openai_compat"] == {"responses": 1}
    assert report["removed"]["control"] == {"events": 2}
    assert report["removed"]["host"]["auth_sessions"] == 1
    dry_total = int(lines[-1].split()[2])
    assert report["total"] == dry_total  # the dry run counted exactly what went

    old_runs, newest = made["finished"][:2], made["finished"][2]
    kept_runs = {r[0] for r in await db_rows(state, "SELECT id FROM pipelines_runs")}
    assert kept_runs == {newest, made["waiting"]}
    streams = {r[0] for r in await db_rows(state, "SELECT DISTINCT stream FROM gateway_events")}
    assert not {f"run:{r}" for r in old_runs} & streams
    for table in ("pipelines_step_results", "pipelines_step_journal"):
        left = {r[0] for r in await db_rows(state, f"SELECT DISTINCT run_id FROM {table}")}
        assert not left & set(old_runs)
    assert [r[0] for r in await db_rows(state, "SELECT principal FROM gateway_auth_sessions")] == [
        "bob"
    ]

    async with running_app(load_settings(str(path))) as (_app, client):
        for run_id in old_runs:
            assert (await client.get(f"/runs/{run_id}", headers=ADMIN)).status_code == 404
            gone = await client.get(f"/runs/{run_id}/events", headers=ADMIN)
            assert gone.status_code == 404
        # The unfinished run kept everything: it still completes once approved.
        waiting = made["waiting"]
        approved = await client.post(f"/runs/{waiting}/approve", json={}, headers=ADMIN)
        assert approved.status_code == 200, await approved.get_data()
        await run_to_end(client, waiting)
        old, new = made["responses"]
        assert (await client.get(f"/v1/responses/{old}", headers=ADMIN)).status_code == 404
        assert (await client.get(f"/v1/responses/{new}", headers=ADMIN)).status_code == 200


async def run_to_end(client: Any, run_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        if record["status"] in TERMINAL:
            assert record["status"] == "completed", record
            assert [s["step_id"] for s in record["steps"]] == ["draft", "review", "publish"]
            return
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


def test_db_prune_with_no_store_says_so_and_creates_none(tmp_path):
    path = write_config(tmp_path)
    result = gateway_cli("db", "prune", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("nothing to prune: no store at ")
    assert not (tmp_path / "state" / "gateway.db").exists()


# -- by age, through the app -------------------------------------------------------------------


async def test_prune_by_age_removes_only_what_is_older_than_its_days(tmp_path, store_url):
    settings = load_settings(str(write_config(tmp_path, store_url)))  # the defaults: 30 days
    state = store_url
    async with running_app(settings) as (app, client):
        made = await make_history(client, app)
        retention = context(app).retention
        assert retention is not None
        soon = await retention.prune(now=now_ms() + 29 * DAY_MS)
        assert soon.removed["host"]["auth_sessions"] == 1  # expired sessions go at once
        # And rate-limit buckets, full again (in the store on PostgreSQL only).
        assert soon.total == 1 + soon.removed["host"]["rate_limits"]
        later = await retention.prune(now=now_ms() + 31 * DAY_MS)
        assert later.removed["pipelines"]["runs"] == 3
        assert later.removed["openai_compat"] == {"responses": 2}
        assert later.removed["control"] == {"events": 4}
        ids = {r[0] for r in await db_rows(state, "SELECT id FROM pipelines_runs")}
        assert ids == {made["waiting"]}  # unfinished: kept however old
        waiting = await client.get(f"/runs/{made['waiting']}/events?format=json", headers=ADMIN)
        types = [e["type"] for e in (await waiting.get_json())["events"]]
        assert types[0] == "run.created" and "run.waiting" in types
        assert await db_rows(state, "SELECT count(*) FROM gateway_auth_sessions") == [(1,)]


# -- the background task -----------------------------------------------------------------------


async def test_the_background_task_prunes_on_its_interval(tmp_path, store_url):
    data = config(tmp_path, store_url, enabled=True, interval_seconds=1, runs_max_count=1)
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(data))
    async with running_app(load_settings(str(path))) as (app, client):
        finished = [await run_to(client, "three", TERMINAL, input={"n": i}) for i in range(3)]

        async def listed() -> set[str]:
            page = await (await client.get("/runs", headers=ADMIN)).get_json()
            return {r["id"] for r in page["runs"]}

        async def pruned_metric() -> bool:
            # Counted once the whole prune is done, a moment after the rows went.
            metrics = (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()
            return 'gateway_retention_pruned_rows_total{kind="runs",plugin="pipelines"} 2.0' in (
                metrics
            )

        deadline = asyncio.get_running_loop().time() + 20
        while await listed() != {finished[-1]} or not await pruned_metric():
            assert asyncio.get_running_loop().time() < deadline, await listed()
            await asyncio.sleep(0.1)
        retention = context(app).retention
        assert retention is not None and retention.last is not None


async def test_workers_pruning_one_store_at_once_remove_each_row_once(tmp_path, store_url):
    path = write_config(tmp_path, store_url, events_max_count=10, batch_size=10)
    settings = load_settings(str(path))
    other = Store.for_settings(settings)
    async with running_app(settings) as (first, _c1), running_app(settings) as (second, _c2):
        await other.open()
        async with other.write() as conn:
            for i in range(300):
                await other.append_event("gateway", "test.old", {"i": i}, conn)
        await other.close()
        reports = await asyncio.gather(
            *(context(app).retention.prune() for app in (first, second))  # type: ignore[union-attr]
        )
    removed = [r.removed["control"]["events"] for r in reports]
    assert sum(removed) == 290
    url = settings.storage.resolved_url(settings.state_dir)
    sql = "SELECT seq FROM gateway_events WHERE stream = 'gateway' ORDER BY seq"
    kept = await db_rows(url, sql)
    assert [r[0] for r in kept] == list(range(291, 301))


# -- streams resumed from before what was kept -------------------------------------------------


async def test_resuming_from_before_the_oldest_kept_event_gets_stream_truncated(
    tmp_path, store_url
):
    settings = load_settings(str(write_config(tmp_path, store_url, events_max_count=2)))
    async with running_app(settings) as (app, client):
        for path in ("/gateway/pause", "/gateway/resume") * 3:
            await client.post(path, headers=ADMIN)
        await context(app).retention.prune()  # type: ignore[union-attr]
        headers = {**ADMIN, "Last-Event-ID": "1"}
        async with client.request("/gateway/events", headers=headers) as conn:
            await conn.send_complete()
            reader = StreamReader(conn, sse=True)
            notice = await reader.next_event()
            events = await reader.events(2)
            await conn.disconnect()
        assert notice["event"] == "stream.truncated" and "id" not in notice
        body = json.loads(notice["data"])
        assert (body["after"], body["pruned_through"]) == (1, 4)
        assert [int(e["id"]) for e in events] == [5, 6]
        # A resume from within what was kept gets no notice.
        async with client.request("/gateway/events", headers={**ADMIN, "Last-Event-ID": "5"}) as c:
            await c.send_complete()
            later = StreamReader(c, sse=True)
            assert int((await later.next_event())["id"]) == 6
            await c.disconnect()
        # The JSON page starts at the oldest kept event; seqs go on after a prune.
        page = await (
            await client.get("/gateway/events?format=json&after=0", headers=ADMIN)
        ).get_json()
        assert [e["seq"] for e in page["events"]] == [5, 6]
        await client.post("/gateway/pause", headers=ADMIN)
        page = await (
            await client.get("/gateway/events?format=json&after=6", headers=ADMIN)
        ).get_json()
        assert [e["seq"] for e in page["events"]] == [7]


# -- the hook ----------------------------------------------------------------------------------


async def test_gateway_prune_is_called_for_every_plugin_and_a_failing_one_is_reported(
    make_settings,
):
    calls: list[dict[str, Any]] = []

    async def prune_widgets(
        store: Store, settings: Settings, now_ms: int, dry_run: bool
    ) -> dict[str, int]:
        assert store.engine is not None  # open
        calls.append({"now_ms": now_ms, "dry_run": dry_run, "batch": settings.retention.batch_size})
        return {"widgets": 0 if dry_run else 3}

    def broken(dry_run: bool) -> None:
        raise RuntimeError("the widget table is gone")

    plugins = [
        ("widgets", Plugin(gateway_prune=prune_widgets)),
        ("broken", Plugin(gateway_prune=broken)),
    ]
    settings = make_settings(retention={"enabled": False, "batch_size": 42})
    async with running_app(settings, extra_plugins=plugins) as (app, client):
        retention = context(app).retention
        assert retention is not None
        dry = await retention.prune(now=123, dry_run=True)
        real = await retention.prune(now=456)
        metrics = (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()
    assert calls == [
        {"now_ms": 123, "dry_run": True, "batch": 42},
        {"now_ms": 456, "dry_run": False, "batch": 42},
    ]
    assert dry.removed["widgets"] == {"widgets": 0} and real.removed["widgets"] == {"widgets": 3}
    assert "broken" not in real.removed
    assert real.errors == {"broken": "RuntimeError: the widget table is gone"}
    assert {"host", "control", "pipelines", "openai_compat"} <= set(real.removed)
    assert 'gateway_retention_pruned_rows_total{kind="widgets",plugin="widgets"} 3.0' in metrics


@pytest.mark.parametrize("setting", ["interval_seconds", "batch_size", "runs_max_count"])
def test_retention_settings_refuse_values_out_of_bounds(make_settings, setting):
    from host.settings import ConfigError

    with pytest.raises(ConfigError, match=f"retention.{setting}"):
        make_settings(retention={setting: -1})
