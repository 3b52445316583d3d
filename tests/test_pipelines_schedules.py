"""Triggers and schedules through HTTP: manual and schedule triggers, interval and cron
schedules, overlap policies, pause, breakpoints, and ticks missed while down."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from host.storage import Store, now_ms, sqlite_url
from tests.conftest import ADMIN, READER, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE
from tests.test_pipelines_api import TERMINAL, assert_error, wait_status


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Any:
    path = tmp_path / "pipelines"
    path.mkdir()
    (path / "testing.py").write_text(PIPELINES_SOURCE)
    return make_settings(plugins={"pipelines": {"directory": str(path), "poll_seconds": 0.05}})


@pytest.fixture
async def client(settings: Any) -> Any:
    async with running_app(settings) as (_app, test_client):
        yield test_client


async def schedules(client: Any) -> list[dict[str, Any]]:
    body = await (await client.get("/schedules", headers=ADMIN)).get_json()
    return list(body["schedules"])


async def wait_schedule(client: Any, predicate: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        found = await schedules(client)
        if found and predicate(found[0]):
            return found[0]
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


async def add(client: Any, **body: Any) -> Any:
    return await client.post("/schedules", json=body, headers=ADMIN)


async def runs_of(client: Any, pipeline: str) -> list[dict[str, Any]]:
    page = await (await client.get(f"/runs?pipeline={pipeline}", headers=ADMIN)).get_json()
    return list(page["runs"])


async def test_interval_schedule_fires_and_reports_next_and_last_fire(client):
    created = await add(client, id="every", pipeline_id="three", interval_seconds=1, input={"n": 2})
    assert created.status_code == 201
    record = await created.get_json()
    assert record["next_fire_ms"] > record["created_ms"] and record["last_outcome"] is None
    fired = await wait_schedule(client, lambda s: s["last_outcome"] == "fired")
    assert fired["next_fire_ms"] > fired["last_fire_ms"]
    run = await wait_status(client, fired["last_run_id"], TERMINAL)
    assert run["output"] == {"v": 7}
    assert run["trigger"]["type"] == "schedule" and run["trigger"]["schedule_id"] == "every"
    assert run["idempotency_key"] == f"schedule:every@{run['trigger']['tick_ms']}"
    deleted = await client.delete("/schedules/every", headers=ADMIN)
    assert deleted.status_code == 200
    assert await schedules(client) == []
    again = await client.delete("/schedules/every", headers=ADMIN)
    assert again.status_code == 404
    assert_error(await again.get_json(), "schedule_not_found")


async def test_cron_schedule_uses_its_time_zone(client):
    created = await add(
        client, pipeline_id="three", cron="0 3 * * *", timezone="Europe/Berlin", input={"n": 1}
    )
    assert created.status_code == 201
    record = await created.get_json()
    nxt = datetime.fromtimestamp(record["next_fire_ms"] / 1000, ZoneInfo("Europe/Berlin"))
    assert (nxt.hour, nxt.minute) == (3, 0)
    assert 0 < record["next_fire_ms"] - now_ms() <= 86_400_000 + 3_600_000


async def test_bad_schedules_are_refused_and_nothing_is_stored(client):
    cases = [
        ({"pipeline_id": "three", "cron": "not a cron", "input": {"n": 1}}, 422, "cron"),
        ({"pipeline_id": "three", "cron": "* * * * * *", "input": {"n": 1}}, 422, "cron"),
        (
            {
                "pipeline_id": "three",
                "cron": "* * * * *",
                "timezone": "Mars/Base",
                "input": {"n": 1},
            },
            422,
            "timezone",
        ),
        ({"pipeline_id": "three", "input": {"n": 1}}, 422, "cron"),
        (
            {"pipeline_id": "three", "cron": "* * * * *", "interval_seconds": 5, "input": {"n": 1}},
            422,
            "cron",
        ),
        ({"pipeline_id": "three", "interval_seconds": 5, "input": {"n": -1}}, 422, "input.n"),
        ({"pipeline_id": "nope", "interval_seconds": 5}, 404, "pipeline"),
        ({"pipeline_id": "three", "interval_seconds": 0}, 400, "interval_seconds"),
    ]
    for body, status, word in cases:
        response = await add(client, **body)
        assert response.status_code == status, body
        error = (await response.get_json())["error"]
        assert word in error["message"], error
    assert await schedules(client) == []
    await add(client, id="dup", pipeline_id="three", interval_seconds=3600, input={"n": 1})
    dup = await add(client, id="dup", pipeline_id="three", interval_seconds=60, input={"n": 1})
    assert dup.status_code == 409
    assert_error(await dup.get_json(), "schedule_exists")
    assert [s["interval_seconds"] for s in await schedules(client)] == [3600]
    denied = await client.post(
        "/schedules", json={"pipeline_id": "three", "interval_seconds": 60}, headers=READER
    )
    assert denied.status_code == 403


async def test_manual_trigger_starts_a_run_and_refuses_bad_input(client):
    triggers = (await (await client.get("/triggers", headers=READER)).get_json())["triggers"]
    assert {"id": "manual:three", "type": "manual", "pipeline_id": "three"}.items() <= next(
        t for t in triggers if t["id"] == "manual:three"
    ).items()
    fired = await client.post(
        "/triggers/manual:three/fire", json={"input": {"n": 3}}, headers=ADMIN
    )
    assert fired.status_code == 202
    body = await fired.get_json()
    run = await wait_status(client, body["runId"], TERMINAL)
    assert run["trigger"] == {"type": "manual", "trigger_id": "manual:three"}
    assert run["output"] == {"v": 9}
    bad = await client.post(
        "/triggers/manual:three/fire", json={"input": {"n": "x"}}, headers=ADMIN
    )
    assert bad.status_code == 422
    for unknown in ("manual:nope", "schedule:nope", "other"):
        response = await client.post(f"/triggers/{unknown}/fire", json={}, headers=ADMIN)
        assert response.status_code == 404
        assert_error(await response.get_json(), "trigger_not_found")
    assert len(await runs_of(client, "three")) == 1


@pytest.mark.parametrize(
    ("overlap", "second", "first_status"),
    [
        ("skip", "skipped_overlap", "waiting"),
        ("cancel", "fired", "cancelled"),
        ("queue", "fired", "waiting"),
    ],
)
async def test_overlap_policy_decides_a_fire_while_the_last_run_is_active(
    client, overlap, second, first_status
):
    await add(client, id="ov", pipeline_id="gated", interval_seconds=3600, overlap=overlap)
    triggers = (await (await client.get("/triggers", headers=ADMIN)).get_json())["triggers"]
    assert "schedule:ov" in {t["id"] for t in triggers}
    first = await (
        await client.post("/triggers/schedule:ov/fire", json={}, headers=ADMIN)
    ).get_json()
    assert first["outcome"] == "fired"
    await wait_status(client, first["runId"], {"waiting"})
    again = await client.post("/triggers/schedule:ov/fire", json={}, headers=ADMIN)
    body = await again.get_json()
    assert body["outcome"] == second
    assert (await wait_status(client, first["runId"], {first_status}))["status"] == first_status
    assert (await schedules(client))[0]["last_outcome"] == second
    expected_runs = 1 if overlap == "skip" else 2
    assert len(await runs_of(client, "gated")) == expected_runs


async def test_pause_skips_scheduled_fires_and_refuses_trigger_fires(client):
    assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 200
    await add(client, id="p", pipeline_id="three", interval_seconds=1, input={"n": 1})
    await wait_schedule(client, lambda s: s["last_outcome"] == "skipped_paused")
    for trigger in ("manual:three", "schedule:p"):
        response = await client.post(
            f"/triggers/{trigger}/fire", json={"input": {"n": 1}}, headers=ADMIN
        )
        assert response.status_code == 503
        assert_error(await response.get_json(), "gateway_paused")
    assert await runs_of(client, "three") == []
    metrics = (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()
    assert 'gateway_pipeline_schedule_fires_total{outcome="skipped_paused"}' in metrics
    await client.post("/gateway/resume", headers=ADMIN)
    await wait_schedule(client, lambda s: s["last_outcome"] == "fired")


async def test_breakpoints_apply_to_trigger_and_schedule_runs(client):
    await client.post("/debug/breakpoints", json={"step_id": "two"}, headers=ADMIN)
    manual = await (
        await client.post("/triggers/manual:three/fire", json={"input": {"n": 1}}, headers=ADMIN)
    ).get_json()
    await add(client, id="bp", pipeline_id="three", interval_seconds=3600, input={"n": 1})
    scheduled = await (
        await client.post("/triggers/schedule:bp/fire", json={}, headers=ADMIN)
    ).get_json()
    for run_id in (manual["runId"], scheduled["runId"]):
        assert (await wait_status(client, run_id, {"paused"}))["paused_at"] == "two"
        await client.post(f"/debug/runs/{run_id}/release", headers=ADMIN)
        assert (await wait_status(client, run_id, TERMINAL))["status"] == "completed"


async def test_ticks_missed_while_down_are_recorded_not_replayed(settings):
    async with running_app(settings) as (_app, client):
        await add(client, id="hourly", pipeline_id="three", interval_seconds=3600, input={"n": 1})
    # The gateway was down for two hours: ticks fell due 2 h 2 min, 1 h 2 min and 2 min
    # ago; all are too old to fire late.
    store = Store(sqlite_url(settings.state_dir))
    await store.open()
    async with store.write() as conn:
        await conn.execute(
            sa.text("UPDATE pipelines_schedules SET next_fire_ms = :t WHERE id = 'hourly'"),
            {"t": now_ms() - 2 * 3_600_000 - 120_000},
        )
    await store.close()
    async with running_app(settings) as (_app, client):
        record = await wait_schedule(client, lambda s: s["last_outcome"] is not None)
        assert record["last_outcome"] == "missed" and record["missed"] == 3
        assert record["next_fire_ms"] > now_ms()
        assert await runs_of(client, "three") == []


# -- webhook triggers --------------------------------------------------------------------------


def signed(body: bytes, secret: str = "s3cret") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Gateway-Signature": f"sha256={digest}", "Content-Type": "application/json"}


@pytest.fixture
async def hook_client(make_settings: Any, tmp_path: Path) -> Any:
    path = tmp_path / "pipelines"
    path.mkdir()
    (path / "testing.py").write_text(PIPELINES_SOURCE)
    settings = make_settings(
        plugins={
            "pipelines": {
                "directory": str(path),
                "poll_seconds": 0.05,
                "webhooks": {"gh": {"pipeline": "three", "secret": "s3cret"}},
            }
        }
    )
    async with running_app(settings) as (_app, test_client):
        yield test_client


async def test_webhook_with_a_valid_signature_starts_one_run_per_delivery(hook_client):
    client = hook_client
    triggers = (await (await client.get("/triggers", headers=ADMIN)).get_json())["triggers"]
    assert {"id": "webhook:gh", "type": "webhook", "pipeline_id": "three"}.items() <= next(
        t for t in triggers if t["id"] == "webhook:gh"
    ).items()
    body = b'{"n": 5}'
    headers = {**signed(body), "X-Gateway-Delivery": "d-1"}
    first = await client.post("/triggers/webhook:gh/webhook", data=body, headers=headers)
    assert first.status_code == 202
    fired = await first.get_json()
    assert fired["outcome"] == "fired"
    run = await wait_status(client, fired["runId"], TERMINAL)
    assert run["output"] == {"v": 13} and run["trigger"]["type"] == "webhook"
    again = await client.post("/triggers/webhook:gh/webhook", data=body, headers=headers)
    repeat = await again.get_json()
    assert repeat["runId"] == fired["runId"] and repeat["outcome"] == "duplicate_delivery"
    assert len(await runs_of(client, "three")) == 1


async def test_webhook_with_a_bad_signature_is_401_and_starts_nothing(hook_client):
    client = hook_client
    body = b'{"n": 5}'
    for headers in (
        signed(body, "wrong"),
        {"Content-Type": "application/json"},
        signed(b'{"n": 6}'),
    ):
        response = await client.post("/triggers/webhook:gh/webhook", data=body, headers=headers)
        assert response.status_code == 401
        assert_error(await response.get_json(), "invalid_signature")
    unknown = await client.post("/triggers/webhook:nope/webhook", data=body, headers=signed(body))
    assert unknown.status_code == 404
    bad_input = b'{"n": "x"}'
    invalid = await client.post(
        "/triggers/webhook:gh/webhook", data=bad_input, headers=signed(bad_input)
    )
    assert invalid.status_code == 422
    await client.post("/gateway/pause", headers=ADMIN)
    paused = await client.post("/triggers/webhook:gh/webhook", data=body, headers=signed(body))
    assert paused.status_code == 503
    assert_error(await paused.get_json(), "gateway_paused")
    assert await runs_of(client, "three") == []
