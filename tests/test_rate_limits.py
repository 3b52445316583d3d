"""Rate limits through HTTP: one token bucket per principal, per client address for public
routes and for failed authentication (``tests/test_login_backoff.py`` has password logins),
429 with ``Retry-After``, and the metrics that count them. No test measures time: buckets
are drained by request count."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN, ADMIN_TOKEN, metric, running_app

# On PostgreSQL (or with several workers) the buckets and counters are in the store.
pytestmark = pytest.mark.usefixtures("store_url")

SLOW = {"per_minute": 3}  # a bucket of 3 that refills one token every 20 s
ALICE = {"Authorization": "Bearer alice-token-0123456789"}
BOB = {"Authorization": "Bearer bob-token-0123456789"}
ELSEWHERE = {"client": ("198.51.100.9", 41000)}
PASSWORD = "open sesame, please"


def assert_429(response: Any, body: Any) -> int:
    assert response.status_code == 429
    retry = response.headers["Retry-After"]
    assert retry.isdigit(), retry
    assert int(retry) >= 1
    assert set(body) == {"error"}
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["message"]
    return int(retry)


def two_slow_tokens(make_settings: Any, **auth: Any) -> Any:
    return make_settings(
        auth={
            "tokens": {
                "alice": {"token": "alice-token-0123456789", "rate_limit": SLOW},
                "bob": {"token": "bob-token-0123456789", "rate_limit": SLOW},
            },
            **auth,
        }
    )


async def test_each_principal_has_its_own_bucket(make_settings):
    async with running_app(two_slow_tokens(make_settings)) as (_app, client):
        before = await metric(client, "gateway_rate_limited_requests_total", scope="principal")
        for _ in range(3):
            assert (await client.get("/gateway/status", headers=ALICE)).status_code == 200
        refused = await client.get("/gateway/status", headers=ALICE)
        assert_429(refused, await refused.get_json())

        # Bob shares the address and the route but not the bucket.
        for _ in range(3):
            assert (await client.get("/gateway/status", headers=BOB)).status_code == 200
        refused = await client.get("/gateway/status", headers=BOB)
        assert_429(refused, await refused.get_json())
        # The admin token (default limit) is unaffected by both.
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200

        after = await metric(client, "gateway_rate_limited_requests_total", scope="principal")
        assert after == before + 2


async def test_a_limited_principal_is_refused_before_its_handler_runs(make_settings):
    alice = {"token": "alice-token-0123456789", "gates": ["*"], "rate_limit": {"per_minute": 1}}
    settings = make_settings(auth={"tokens": {"alice": alice}})
    async with running_app(settings) as (_app, client):
        assert (await client.get("/gateway/status", headers=ALICE)).status_code == 200
        refused = await client.post("/gateway/pause", headers=ALICE)
        assert_429(refused, await refused.get_json())
        status = await client.get("/gateway/status", headers=ADMIN)
        assert (await status.get_json())["state"] == "running"


async def test_bootstrap_is_rate_limited_per_client_address(make_settings):
    settings = make_settings(auth={"public_rate_limit": SLOW})
    async with running_app(settings) as (_app, client):
        for _ in range(3):
            assert (await client.get("/gateway/auth/bootstrap")).status_code == 200
        refused = await client.get("/gateway/auth/bootstrap")
        assert_429(refused, await refused.get_json())
        # Another address has its own bucket; the liveness probe is never limited.
        other = await client.get("/gateway/auth/bootstrap", scope_base=ELSEWHERE)
        assert other.status_code == 200
        assert (await client.get("/health")).status_code == 200
        # Authenticated routes use the principal's bucket, not the address's.
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200
        assert await metric(client, "gateway_rate_limited_requests_total", scope="public") == 1


async def test_session_issuance_is_rate_limited_per_client_address(make_settings, monkeypatch):
    monkeypatch.setenv("GW_TEST_RL_PASSWORD", PASSWORD)
    settings = make_settings(
        auth={
            "mode": "password-session",
            "password": {"env": "GW_TEST_RL_PASSWORD"},
            "public_rate_limit": SLOW,
        }
    )
    async with running_app(settings) as (_app, client):
        for _ in range(3):
            ok = await client.post("/gateway/auth/session", json={"password": PASSWORD})
            assert ok.status_code == 200
        refused = await client.post("/gateway/auth/session", json={"password": PASSWORD})
        body = await refused.get_json()
        assert_429(refused, body)
        assert "access_token" not in body
        status = await client.get("/gateway/status", headers=ADMIN)
        assert (await status.get_json())["auth"]["total_sessions_issued"] == 3


async def test_failed_auth_throttles_failing_requests_of_that_address_only(make_settings):
    settings = make_settings(auth={"failed_auth_limit": SLOW})
    async with running_app(settings) as (_app, client):
        failures = await metric(client, "gateway_auth_failures_total")
        limited = await metric(client, "gateway_rate_limited_requests_total", scope="failed_auth")
        for i in range(3):
            bad = await client.get(
                "/gateway/status", headers={"Authorization": f"Bearer wrong-{i}"}
            )
            assert bad.status_code == 401
        throttled = await client.get("/gateway/status", headers={"Authorization": "Bearer x"})
        assert_429(throttled, await throttled.get_json())
        # A valid token from the same address is never refused for others' failures.
        good = await client.get("/gateway/status", headers=ADMIN)
        assert good.status_code == 200
        also = await client.get(
            "/gateway/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert also.status_code == 200

        # Failures from another address have their own bucket.
        elsewhere = await client.get(
            "/gateway/status", headers={"Authorization": "Bearer y"}, scope_base=ELSEWHERE
        )
        assert elsewhere.status_code == 401

        assert await metric(client, "gateway_auth_failures_total") == failures + 5
        assert (
            await metric(client, "gateway_rate_limited_requests_total", scope="failed_auth")
            == limited + 1
        )
        status = await client.get("/gateway/status", headers=ADMIN, scope_base=ELSEWHERE)
        auth = (await status.get_json())["auth"]
        assert auth["auth_failures"] == 5
        assert auth["rate_limited_requests"] == 1


@pytest.mark.parametrize("per_minute", [1, 2])
async def test_retry_after_is_a_whole_number_of_seconds(make_settings, per_minute):
    settings = make_settings(
        auth={
            "tokens": {
                "alice": {
                    "token": "alice-token-0123456789",
                    "rate_limit": {"per_minute": per_minute},
                }
            }
        }
    )
    async with running_app(settings) as (_app, client):
        for _ in range(per_minute):
            assert (await client.get("/gateway/status", headers=ALICE)).status_code == 200
        refused = await client.get("/gateway/status", headers=ALICE)
        retry = assert_429(refused, await refused.get_json())
        assert retry <= 60 // per_minute
