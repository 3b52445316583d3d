"""An ``Idempotency-Key`` names one request: the same key with the same input returns the
first run; with another input it is 422 ``idempotency_key_reused``, naming the key, and
nothing is started (also after a restart, on ``/run`` and through ``PipelinesAPI``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from host.api import GatewayError, Principal, service
from plugins.pipelines.contract import PipelinesAPI
from tests.conftest import ADMIN, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, write_pipelines
from tests.test_pipelines_api import assert_error, run_count

# Runs, schedules, keys and events are stored: on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("store_url")

RUNNER_TOKEN = "test-runner-token-0123456789"
RUNNER = {"Authorization": f"Bearer {RUNNER_TOKEN}"}


@pytest.fixture
def settings(make_settings: Any, tmp_path: Path) -> Any:
    directory = write_pipelines(tmp_path, "testing", PIPELINES_SOURCE)
    return make_settings(
        auth={"tokens": {"runner": {"token": RUNNER_TOKEN, "gates": ["allow_pipeline_run"]}}},
        plugins={"pipelines": {"directory": str(directory), "poll_seconds": 0.05}},
    )


async def post(client: Any, path: str, body: Any, key: str, auth: dict[str, str] = ADMIN) -> Any:
    return await client.post(path, json=body, headers={"Idempotency-Key": key, **auth})


async def test_the_same_key_and_input_return_the_first_run_whatever_the_key_order(settings):
    async with running_app(settings) as (_app, client):
        first = await post(client, "/pipelines/composite/start", {"input": {"a": 1, "b": 2}}, "k")
        assert first.status_code == 202
        again = await post(client, "/pipelines/composite/start", {"input": {"b": 2, "a": 1}}, "k")
        assert again.status_code == 202
        first_body, again_body = await first.get_json(), await again.get_json()
        assert first_body["created"] is True and again_body["created"] is False
        assert again_body["runId"] == first_body["runId"]
        assert await run_count(client) == 1


async def test_a_key_reused_with_another_input_is_422_naming_the_key_and_starts_nothing(
    settings,
):
    async with running_app(settings) as (_app, client):
        first = await post(client, "/pipelines/three/start", {"input": {"n": 1}}, "order-7")
        run_id = (await first.get_json())["runId"]
        for path in ("/pipelines/three/start", "/pipelines/three/run"):
            reused = await post(client, path, {"input": {"n": 2}}, "order-7")
            assert reused.status_code == 422
            body = await reused.get_json()
            assert_error(body, "idempotency_key_reused")
            assert "'order-7'" in body["error"]["message"] and run_id in body["error"]["message"]
            assert body["error"]["details"] == {"idempotency_key": "order-7", "run_id": run_id}
        assert await run_count(client) == 1
    # The fingerprint is stored: after a restart the same holds.
    async with running_app(settings) as (_app, client):
        reused = await post(client, "/pipelines/three/start", {"input": {"n": 2}}, "order-7")
        assert reused.status_code == 422
        assert_error(await reused.get_json(), "idempotency_key_reused")
        same = await post(client, "/pipelines/three/start", {"input": {"n": 1}}, "order-7")
        assert same.status_code == 202
        assert (await same.get_json())["runId"] == run_id
        # Keys are scoped per principal: another caller's same key with another input
        # starts that caller's own run.
        other = await post(client, "/pipelines/three/start", {"input": {"n": 2}}, "order-7", RUNNER)
        assert other.status_code == 202 and (await other.get_json())["created"] is True
        assert await run_count(client) == 2


async def test_the_pipelines_api_refuses_a_reused_key_too(settings):
    async with running_app(settings) as (app, _client):
        api = service(PipelinesAPI, app=app)
        admin = Principal(name="admin", kind="token", gates=frozenset({"*"}))
        first = await api.start_run(
            "three", {"n": 1}, principal=admin, trigger={"type": "test"}, idempotency_key="x"
        )
        again = await api.start_run(
            "three", {"n": 1}, principal=admin, trigger={"type": "test"}, idempotency_key="x"
        )
        assert again == first
        with pytest.raises(GatewayError) as refused:
            await api.start_run(
                "three", {"n": 3}, principal=admin, trigger={"type": "test"}, idempotency_key="x"
            )
        assert refused.value.status == 422 and refused.value.code == "idempotency_key_reused"


async def test_a_fired_trigger_honours_an_idempotency_key_like_start(settings, store_url):
    async with running_app(settings) as (_app, client):
        body = {"input": {"n": 1}}
        first = await post(client, "/triggers/manual:three/fire", body, "fire-1")
        again = await post(client, "/triggers/manual:three/fire", body, "fire-1")
        assert first.status_code == again.status_code == 202
        first_body, again_body = await first.get_json(), await again.get_json()
        assert (first_body["outcome"], again_body["outcome"]) == ("fired", "duplicate")
        assert again_body["runId"] == first_body["runId"]
        # One key namespace per caller: /start with the same key and input finds that run.
        started = await post(client, "/pipelines/three/start", body, "fire-1")
        assert (await started.get_json())["runId"] == first_body["runId"]
        reused = await post(client, "/triggers/manual:three/fire", {"input": {"n": 2}}, "fire-1")
        assert reused.status_code == 422
        assert_error(await reused.get_json(), "idempotency_key_reused")
        too_long = await post(client, "/triggers/manual:three/fire", body, "k" * 201)
        assert too_long.status_code == 400
        assert_error(await too_long.get_json(), "invalid_idempotency_key")

        # A schedule's ticks are once-only already: a key there is refused, nothing fires.
        created = await client.post(
            "/schedules",
            json={"id": "daily", "pipeline_id": "three", "cron": "0 3 * * *", "input": {"n": 1}},
            headers=ADMIN,
        )
        assert created.status_code == 201
        keyed = await post(client, "/triggers/schedule:daily/fire", {}, "fire-2")
        assert keyed.status_code == 400
        keyed_body = await keyed.get_json()
        assert_error(keyed_body, "invalid_idempotency_key")
        assert "manual and webhook" in keyed_body["error"]["message"]
        unknown = await post(client, "/triggers/schedule:nope/fire", {}, "fire-2")
        assert unknown.status_code == 404
        assert await run_count(client) == 1


async def test_two_replicas_share_the_keys_one_run_per_key_however_the_requests_land(settings):
    # Two gateways on one store, as replicas behind a load balancer: a retried request
    # that reaches the other replica gets the first run, and requests racing on both
    # replicas with one key start one run between them.
    async with running_app(settings) as (_a, a), running_app(settings) as (_b, b):
        first = await post(a, "/pipelines/three/start", {"input": {"n": 1}}, "retry-me")
        retried = await post(b, "/pipelines/three/start", {"input": {"n": 1}}, "retry-me")
        assert (await first.get_json())["created"] is True
        assert (await retried.get_json())["created"] is False
        assert (await retried.get_json())["runId"] == (await first.get_json())["runId"]
        reused = await post(b, "/pipelines/three/start", {"input": {"n": 2}}, "retry-me")
        assert reused.status_code == 422
        assert_error(await reused.get_json(), "idempotency_key_reused")

        raced = await asyncio.gather(
            *(
                post(client, "/pipelines/three/start", {"input": {"n": 3}}, "raced")
                for client in (a, b) * 5
            )
        )
        assert {r.status_code for r in raced} == {202}
        bodies = [await r.get_json() for r in raced]
        assert len({body["runId"] for body in bodies}) == 1
        assert [body["created"] for body in bodies].count(True) == 1
        assert await run_count(a) == await run_count(b) == 2
