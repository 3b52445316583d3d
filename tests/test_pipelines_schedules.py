"""Triggers and schedules through HTTP: manual and schedule triggers, interval and cron
schedules, overlap policies, pause, breakpoints, and ticks missed while down."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from host.storage import Store, now_ms
from tests.conftest import ADMIN, READER, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, signed
from tests.test_pipelines_api import TERMINAL, assert_error, wait_status

# Runs, schedules, keys and events are stored: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")


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
    cases: list[tuple[dict[str, Any], int, str]] = [
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
    store = Store.for_settings(settings)
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


RUNNER_TOKEN = "test-runner-token-0123456789"
RUNNER = {"Authorization": f"Bearer {RUNNER_TOKEN}"}


@pytest.fixture
def hook_settings(make_settings: Any, tmp_path: Path) -> Any:
    path = tmp_path / "pipelines"
    path.mkdir()
    (path / "testing.py").write_text(PIPELINES_SOURCE)
    return make_settings(
        auth={"tokens": {"runner": {"token": RUNNER_TOKEN, "gates": ["allow_pipeline_run"]}}},
        plugins={
            "pipelines": {
                "directory": str(path),
                "poll_seconds": 0.05,
                "webhooks": {"gh": {"pipeline": "three", "secret": "s3cret"}},
            }
        },
    )


@pytest.fixture
async def hook_client(hook_settings: Any) -> Any:
    async with running_app(hook_settings) as (_app, test_client):
        yield test_client


async def deliver(client: Any, body: bytes, headers: dict[str, str]) -> Any:
    return await client.post("/triggers/webhook:gh/webhook", data=body, headers=headers)


async def start_keyed(client: Any, key: str, auth: dict[str, str]) -> dict[str, Any]:
    response = await client.post(
        "/pipelines/three/start",
        json={"input": {"n": 1}},
        headers={"Idempotency-Key": key, **auth},
    )
    assert response.status_code == 202, await response.get_data()
    body: dict[str, Any] = await response.get_json()
    return body


async def test_webhook_with_a_valid_signature_starts_one_run_per_delivery(hook_client):
    client = hook_client
    triggers = (await (await client.get("/triggers", headers=ADMIN)).get_json())["triggers"]
    assert {"id": "webhook:gh", "type": "webhook", "pipeline_id": "three"}.items() <= next(
        t for t in triggers if t["id"] == "webhook:gh"
    ).items()
    body = b'{"n": 5}'
    headers = signed(body, "d-1")
    first = await deliver(client, body, headers)
    assert first.status_code == 202
    fired = await first.get_json()
    assert fired["outcome"] == "fired"
    run = await wait_status(client, fired["runId"], TERMINAL)
    assert run["output"] == {"v": 13} and run["trigger"]["delivery"] == "d-1"
    assert run["idempotency_key"] == "webhook:gh:d-1"
    again = await deliver(client, body, headers)
    repeat = await again.get_json()
    assert repeat["runId"] == fired["runId"] and repeat["outcome"] == "duplicate_delivery"
    assert len(await runs_of(client, "three")) == 1


async def test_a_captured_delivery_cannot_be_replayed_under_a_new_id_or_late(hook_client):
    client = hook_client
    body = b'{"n": 5}'
    captured = signed(body, "d-1")
    assert (await deliver(client, body, captured)).status_code == 202
    renamed = dict(captured, **{"X-Gateway-Delivery": "d-2"})
    restamped = dict(captured, **{"X-Gateway-Timestamp": str(int(time.time()) + 1)})
    for headers in (renamed, restamped):
        response = await deliver(client, body, headers)
        assert response.status_code == 401
        assert_error(await response.get_json(), "invalid_signature")
    # A minute past the 300 s tolerance either way: a slow machine must not bring the
    # future stamp back within it before the request is read.
    for stamp in (int(time.time()) - 360, int(time.time()) + 360):
        late = await deliver(client, body, signed(body, "d-3", timestamp=stamp))
        assert late.status_code == 401
        assert_error(await late.get_json(), "stale_timestamp")
    assert len(await runs_of(client, "three")) == 1


async def test_a_webhook_without_timestamp_or_delivery_id_is_400_naming_the_header(hook_client):
    client = hook_client
    body = b'{"n": 5}'
    headers = signed(body, "d-1")
    for header, value in (
        ("X-Gateway-Timestamp", None),
        ("X-Gateway-Timestamp", "yesterday"),
        ("X-Gateway-Delivery", None),
        ("X-Gateway-Delivery", " "),
        ("X-Gateway-Delivery", "d.1"),
    ):
        sent = {k: v for k, v in headers.items() if k != header}
        if value is not None:
            sent[header] = value
        response = await deliver(client, body, sent)
        assert response.status_code == 400
        error = await response.get_json()
        assert_error(error, "invalid_webhook_header")
        assert header in error["error"]["message"]
    assert await runs_of(client, "three") == []


async def test_webhook_with_a_bad_signature_is_401_and_starts_nothing(hook_client):
    client = hook_client
    body = b'{"n": 5}'
    unsigned = {k: v for k, v in signed(body, "d-1").items() if k != "X-Gateway-Signature"}
    for headers in (signed(body, "d-1", "wrong"), unsigned, signed(b'{"n": 6}', "d-1")):
        response = await deliver(client, body, headers)
        assert response.status_code == 401
        assert_error(await response.get_json(), "invalid_signature")
    unknown = await client.post(
        "/triggers/webhook:nope/webhook", data=body, headers=signed(body, "d-1")
    )
    assert unknown.status_code == 404
    bad_input = b'{"n": "x"}'
    invalid = await deliver(client, bad_input, signed(bad_input, "d-1"))
    assert invalid.status_code == 422
    await client.post("/gateway/pause", headers=ADMIN)
    paused = await deliver(client, body, signed(body, "d-1"))
    assert paused.status_code == 503
    assert_error(await paused.get_json(), "gateway_paused")
    assert await runs_of(client, "three") == []


async def test_an_api_idempotency_key_equal_to_a_webhook_key_does_not_collide(hook_client):
    client = hook_client
    planted = await start_keyed(client, "webhook:gh:d9", ADMIN)
    body = b'{"n": 5}'
    delivered = await (await deliver(client, body, signed(body, "d9"))).get_json()
    assert delivered["outcome"] == "fired" and delivered["runId"] != planted["runId"]
    again = await start_keyed(client, "webhook:gh:d9", ADMIN)
    assert again["runId"] == planted["runId"] and again["created"] is False
    record = await wait_status(client, planted["runId"], TERMINAL)
    assert record["idempotency_key"] == "webhook:gh:d9" and record["trigger"]["type"] == "api"
    assert len(await runs_of(client, "three")) == 2


async def test_api_idempotency_keys_are_scoped_per_principal(hook_client):
    client = hook_client
    mine = await start_keyed(client, "order-42", ADMIN)
    theirs = await start_keyed(client, "order-42", RUNNER)
    assert theirs["created"] is True and theirs["runId"] != mine["runId"]
    repeat = await start_keyed(client, "order-42", RUNNER)
    assert repeat["runId"] == theirs["runId"] and repeat["created"] is False
    record = await wait_status(client, theirs["runId"], TERMINAL)
    assert record["created_by"] == "runner" and record["idempotency_key"] == "order-42"


async def test_keys_stored_before_namespacing_keep_deduplicating_for_their_principal(
    hook_settings,
):
    async with running_app(hook_settings) as (_app, client):
        kept = await start_keyed(client, "order-7", ADMIN)
        planted = await start_keyed(client, "webhook:gh:d9", ADMIN)
    # Make the store look as it did before migration 4: raw keys, migration not applied.
    store = Store.for_settings(hook_settings)
    await store.open()
    async with store.write() as conn:
        for run_id, key in ((kept["runId"], "order-7"), (planted["runId"], "webhook:gh:d9")):
            await conn.execute(
                sa.text("UPDATE pipelines_runs SET idempotency_key = :k WHERE id = :id"),
                {"k": key, "id": run_id},
            )
        await conn.execute(
            sa.text("DELETE FROM schema_migrations WHERE namespace = 'pipelines' AND version = 4")
        )
    await store.close()
    async with running_app(hook_settings) as (_app, client):
        again = await start_keyed(client, "order-7", ADMIN)
        assert again["runId"] == kept["runId"] and again["created"] is False
        other = await start_keyed(client, "order-7", RUNNER)
        assert other["created"] is True
        body = b'{"n": 5}'
        delivered = await (await deliver(client, body, signed(body, "d9"))).get_json()
        assert delivered["outcome"] == "fired" and delivered["runId"] != planted["runId"]
        record = await wait_status(client, kept["runId"], TERMINAL)
        assert record["idempotency_key"] == "order-7"


async def test_the_documented_worked_example_has_a_valid_signature(make_settings, tmp_path):
    # docs/reference/pipelines.md#webhook-triggers: this exact signature. Its timestamp
    # lies further back than the largest tolerance (a day), so the delivery is refused
    # as stale: a refusal checked only once the signature matched.
    path = tmp_path / "pipelines"
    path.mkdir()
    (path / "testing.py").write_text(PIPELINES_SOURCE)
    hook = {"pipeline": "three", "secret": "s3cret", "tolerance_seconds": 86400}
    settings = make_settings(
        plugins={"pipelines": {"directory": str(path), "webhooks": {"gh": hook}}}
    )
    digest = "4477f0a6b27553ef29d4408347d70cba94b110d8949857d143b47283e38ea9be"
    headers = {
        "X-Gateway-Timestamp": "1700000000",
        "X-Gateway-Delivery": "d-1",
        "X-Gateway-Signature": f"sha256={digest}",
        "Content-Type": "application/json",
    }
    async with running_app(settings) as (_app, client):
        response = await deliver(client, b'{"n": 5}', headers)
        assert response.status_code == 401, await response.get_data()
        assert (await response.get_json())["error"]["code"] == "stale_timestamp"
        forged = await deliver(client, b'{"n": 6}', headers)
        assert (await forged.get_json())["error"]["code"] == "invalid_signature"
