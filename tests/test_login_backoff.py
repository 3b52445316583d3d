"""Failed authentication through HTTP: password logins back off exponentially per
(account, client address) and per account, before the password is checked; failed bearer
tokens are throttled per address; valid tokens and sessions are never refused for it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from host.auth.passwords import hash_password
from tests.conftest import ADMIN, metric, running_app

# On PostgreSQL (or with several workers) the buckets and counters are in the store.
pytestmark = pytest.mark.usefixtures("store_url")

ALICE_PW = "alice's long passphrase"
BOB_PW = "bob's other passphrase"
ALICE_HASH = hash_password(ALICE_PW)
BOB_HASH = hash_password(BOB_PW)


def addr(ip: str) -> dict[str, Any]:
    return {"client": (ip, 40000)}


STRANGER, ALICE_HOME, OTHER = addr("203.0.113.7"), addr("198.51.100.20"), addr("192.0.2.33")


def backoff_settings(make_settings: Any, failed_auth_per_minute: int = 30, **backoff: Any) -> Any:
    return make_settings(
        auth={
            "failed_auth_limit": {"per_minute": failed_auth_per_minute},
            "mode": "password-session",
            "users": {
                "alice": {"password_hash": ALICE_HASH, "gates": ["*"]},
                "bob": {"password_hash": BOB_HASH},
            },
            "login_backoff": backoff,
        }
    )


async def login(client: Any, user: str, password: str, where: dict[str, Any]) -> Any:
    return await client.post(
        "/gateway/auth/session", json={"user": user, "password": password}, scope_base=where
    )


async def assert_locked(response: Any) -> int:
    assert response.status_code == 429, await response.get_data()
    body = await response.get_json()
    assert body["error"]["code"] == "rate_limited"
    assert "access_token" not in body
    retry = response.headers["Retry-After"]
    assert retry.isdigit() and int(retry) >= 1
    return int(retry)


async def wait_unlocked(client: Any, user: str, where: dict[str, Any]) -> Any:
    """Poll with a wrong password until the lock lifts; returns that first answer."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await login(client, user, "still not it", where)
        if response.status_code != 429:
            return response
        await asyncio.sleep(0.2)
    raise AssertionError("the login stayed locked")


async def test_a_locked_out_login_is_429_before_the_password_is_checked(make_settings):
    settings = backoff_settings(make_settings, free_failures=2, base_seconds=60)
    async with running_app(settings) as (_app, client):
        for _ in range(2):
            assert (await login(client, "alice", "wrong", STRANGER)).status_code == 401
        checks = await metric(client, "gateway_password_checks_total")
        assert checks == 2
        locked = await login(client, "alice", ALICE_PW, STRANGER)
        assert 59 <= await assert_locked(locked) <= 60
        # Refused before the scrypt: no password check ran for it.
        assert await metric(client, "gateway_password_checks_total") == checks
        assert (
            await metric(client, "gateway_rate_limited_requests_total", scope="login_backoff") == 1
        )
        status = await client.get("/gateway/status", headers=ADMIN)
        assert (await status.get_json())["auth"]["active_sessions"] == 0


async def test_back_off_doubles_with_each_failure_up_to_the_cap(make_settings):
    settings = backoff_settings(make_settings, free_failures=1, base_seconds=1, max_seconds=2)
    async with running_app(settings) as (_app, client):
        assert (await login(client, "alice", "wrong", STRANGER)).status_code == 401
        assert await assert_locked(await login(client, "alice", "wrong", STRANGER)) == 1
        assert (await wait_unlocked(client, "alice", STRANGER)).status_code == 401
        assert await assert_locked(await login(client, "alice", "wrong", STRANGER)) == 2
        assert (await wait_unlocked(client, "alice", STRANGER)).status_code == 401
        # 4 s by doubling, capped at max_seconds.
        assert await assert_locked(await login(client, "alice", "wrong", STRANGER)) == 2


async def test_a_stranger_locks_only_their_own_address_out_of_an_account(make_settings):
    settings = backoff_settings(
        make_settings, free_failures=2, account_free_failures=5, base_seconds=60
    )
    async with running_app(settings) as (_app, client):
        for _ in range(2):
            assert (await login(client, "alice", "guess", STRANGER)).status_code == 401
        await assert_locked(await login(client, "alice", ALICE_PW, STRANGER))
        # Alice at home is below the per-account threshold: she logs in.
        assert (await login(client, "alice", ALICE_PW, ALICE_HOME)).status_code == 200
        # And the stranger's address is not locked out of other accounts.
        assert (await login(client, "bob", BOB_PW, STRANGER)).status_code == 200


async def test_failures_from_many_addresses_back_off_the_account_everywhere(make_settings):
    settings = backoff_settings(
        make_settings, free_failures=5, account_free_failures=3, base_seconds=60
    )
    async with running_app(settings) as (_app, client):
        for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            assert (await login(client, "alice", "guess", addr(ip))).status_code == 401
        await assert_locked(await login(client, "alice", ALICE_PW, ALICE_HOME))
        # Only that account: bob logs in from the same address.
        assert (await login(client, "bob", BOB_PW, ALICE_HOME)).status_code == 200


async def test_a_successful_login_clears_its_address_but_not_the_account_count(make_settings):
    settings = backoff_settings(
        make_settings, free_failures=2, account_free_failures=3, base_seconds=60
    )
    async with running_app(settings) as (_app, client):
        assert (await login(client, "alice", "typo", ALICE_HOME)).status_code == 401
        assert (await login(client, "alice", ALICE_PW, ALICE_HOME)).status_code == 200
        # Her address starts again from zero: one typo is not a lock-out.
        assert (await login(client, "alice", "typo", ALICE_HOME)).status_code == 401
        assert (await login(client, "alice", ALICE_PW, ALICE_HOME)).status_code == 200
        # Two failures stay on the account; a third (anywhere) reaches its threshold.
        assert (await login(client, "alice", "guess", STRANGER)).status_code == 401
        await assert_locked(await login(client, "alice", ALICE_PW, ALICE_HOME))


async def test_parallel_guesses_cannot_slip_past_the_limit(make_settings):
    settings = backoff_settings(make_settings, free_failures=2, base_seconds=60)
    async with running_app(settings) as (_app, client):
        answers = await asyncio.gather(
            *(login(client, "alice", f"guess {i}", STRANGER) for i in range(6))
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [401, 401, 429, 429, 429, 429]
        assert await metric(client, "gateway_password_checks_total") == 2


async def test_unknown_accounts_back_off_like_real_ones(make_settings):
    settings = backoff_settings(make_settings, free_failures=2, base_seconds=60)
    async with running_app(settings) as (_app, client):
        for _ in range(2):
            assert (await login(client, "mallory", "guess", STRANGER)).status_code == 401
        await assert_locked(await login(client, "mallory", "guess", STRANGER))
        # The unknown account cost the same password check as a real one.
        assert await metric(client, "gateway_password_checks_total", result="mismatch") == 2


# -- bearer tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [3, 20])
async def test_a_valid_token_or_session_is_never_refused_after_failures(make_settings, failures):
    settings = backoff_settings(make_settings, failed_auth_per_minute=3)
    async with running_app(settings) as (_app, client):
        session = await login(client, "alice", ALICE_PW, STRANGER)
        token = (await session.get_json())["access_token"]
        limited = await metric(client, "gateway_rate_limited_requests_total", scope="failed_auth")
        codes = []
        for i in range(failures):
            bad = await client.get(
                "/gateway/status",
                headers={"Authorization": f"Bearer wrong-{i}"},
                scope_base=STRANGER,
            )
            codes.append(bad.status_code)
            if bad.status_code == 429:
                assert bad.headers["Retry-After"].isdigit()
        # Failing credentials are throttled past the limit (3 a minute per address) ...
        assert codes == [401] * 3 + [429] * (failures - 3)
        # ... while valid ones from the same address always pass.
        for headers in (ADMIN, {"Authorization": f"Bearer {token}"}):
            for _ in range(3):
                ok = await client.get("/gateway/status", headers=headers, scope_base=STRANGER)
                assert ok.status_code == 200
        assert (
            await metric(client, "gateway_rate_limited_requests_total", scope="failed_auth")
            == limited + failures - 3
        )
        status = await client.get("/gateway/status", headers=ADMIN)
        auth = (await status.get_json())["auth"]
        assert auth["auth_failures"] == failures
        assert auth["rate_limited_requests"] == failures - 3


async def test_failed_logins_do_not_throttle_bearer_requests_from_the_address(make_settings):
    settings = backoff_settings(
        make_settings, failed_auth_per_minute=1, free_failures=2, base_seconds=60
    )
    async with running_app(settings) as (_app, client):
        for _ in range(3):
            await login(client, "alice", "guess", STRANGER)
        bad = await client.get(
            "/gateway/status", headers={"Authorization": "Bearer wrong"}, scope_base=STRANGER
        )
        assert bad.status_code == 401  # the first failed token, not the logins, counts
        ok = await client.get("/gateway/status", headers=ADMIN, scope_base=STRANGER)
        assert ok.status_code == 200
        assert (await login(client, "bob", BOB_PW, OTHER)).status_code == 200


async def test_an_account_name_postgresql_cannot_store_is_a_plain_failed_login(make_settings):
    # The counters are keyed by a digest: a NUL in a made-up name was a 500 on PostgreSQL.
    settings = backoff_settings(make_settings, free_failures=1, base_seconds=60)
    async with running_app(settings) as (_app, client):
        assert (await login(client, "mal\u0000lory", "guess", STRANGER)).status_code == 401
        await assert_locked(await login(client, "mal\u0000lory", "guess", STRANGER))
        assert (await login(client, "alice", ALICE_PW, STRANGER)).status_code == 200
