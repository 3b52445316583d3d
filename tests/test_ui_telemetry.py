"""The UI telemetry plugin: ``POST /gateway/ui/telemetry`` stores batched UI events
before its 202, refuses oversized batches and metadata naming the event, limits each
principal's rate (429 with ``Retry-After``), and its retention removes old events."""

from __future__ import annotations

from typing import Any

import pytest

from host.api import context, now_ms, service
from plugins.ui_telemetry.contract import UiTelemetry
from tests.conftest import ADMIN, READER, assert_error, db_rows, running_app

pytestmark = pytest.mark.usefixtures("store_url")
PATH = "/gateway/ui/telemetry"
DAY_MS = 86_400_000


def event(**fields: Any) -> dict[str, Any]:
    return {"view": "runs", "action": "open", **fields}


async def stored(url: str) -> list[tuple[Any, ...]]:
    return await db_rows(
        url, "SELECT owner, view, action, session FROM ui_telemetry_events ORDER BY n"
    )


async def test_a_batch_is_stored_before_the_202_and_counted_for_the_dashboard(
    make_settings, store_url
):
    async with running_app(make_settings()) as (app, client):
        batch = {
            "events": [
                event(session="s-1", ts_ms=1_700_000_000_000, metadata={"tab": "waiting"}),
                event(action="click", session="s-1"),
                event(view="chat", action="send"),
            ]
        }
        response = await client.post(PATH, json=batch, headers=ADMIN)
        assert response.status_code == 202
        assert await response.get_json() == {"accepted": 3}
        assert await stored(store_url) == [
            ("token:admin", "runs", "open", "s-1"),
            ("token:admin", "runs", "click", "s-1"),
            ("token:admin", "chat", "send", None),
        ]
        counts = await service(UiTelemetry, app=app).counts(0)
        assert {(c["view"], c["action"]): c["events"] for c in counts} == {
            ("runs", "open"): 1,
            ("runs", "click"): 1,
            ("chat", "send"): 1,
        }
        assert (await client.post(PATH, json=batch, headers=READER)).status_code == 403


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"events": [{"action": "open"}]}, "events.0.view"),
        ({"events": [event(view="")]}, "events.0.view"),
        ({"events": [event(colour="red")]}, "events.0.colour"),
        ({"events": []}, "events"),
        ({"events": [event(), event(), event()]}, "events"),
        ({"events": [event(), event(metadata={"blob": "x" * 200})]}, "events.1.metadata"),
        ({"events": [event(ts_ms=-1)]}, "events.0.ts_ms"),
        ({}, "events"),
    ],
)
async def test_bad_batches_are_refused_naming_the_field_and_store_nothing(
    make_settings, store_url, body, param
):
    settings = make_settings(
        plugins={"ui_telemetry": {"max_batch_events": 2, "max_metadata_bytes": 100}}
    )
    async with running_app(settings) as (_app, client):
        response = await client.post(PATH, json=body, headers=ADMIN)
        assert response.status_code == 400, await response.get_data(as_text=True)
        error = assert_error(await response.get_json(), "invalid_request_body")
        assert param in error["message"]
    assert await stored(store_url) == []


async def test_each_principal_is_limited_to_its_events_per_minute(make_settings, store_url):
    settings = make_settings(plugins={"ui_telemetry": {"events_per_minute": 3}})
    async with running_app(settings) as (_app, client):
        first = await client.post(PATH, json={"events": [event(), event()]}, headers=ADMIN)
        assert first.status_code == 202
        over = await client.post(PATH, json={"events": [event(), event()]}, headers=ADMIN)
        assert over.status_code == 429
        assert_error(await over.get_json(), "telemetry_rate_limited")
        assert int(over.headers["Retry-After"]) >= 1
        one = await client.post(PATH, json={"events": [event()]}, headers=ADMIN)
        assert one.status_code == 202
    assert len(await stored(store_url)) == 3


async def test_old_telemetry_events_are_pruned_by_max_age_days(make_settings, store_url):
    settings = make_settings(plugins={"ui_telemetry": {"max_age_days": 7}})
    async with running_app(settings) as (app, client):
        assert (
            await client.post(PATH, json={"events": [event()]}, headers=ADMIN)
        ).status_code == 202
        retention = context(app).retention
        assert retention is not None
        soon = await retention.prune(now=now_ms() + 6 * DAY_MS)
        assert soon.removed["ui_telemetry"] == {"ui_telemetry_events": 0}
        later = await retention.prune(now=now_ms() + 8 * DAY_MS)
        assert later.removed["ui_telemetry"] == {"ui_telemetry_events": 1}
    assert await stored(store_url) == []


async def test_ui_telemetry_config_is_checked_naming_the_key(make_settings):
    async with running_app(make_settings()) as (_app, client):
        patch = {"plugins": {"ui_telemetry": {"events_per_minute": 0}}}
        response = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        assert "plugins.ui_telemetry.events_per_minute" in error["message"]
