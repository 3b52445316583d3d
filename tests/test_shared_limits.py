"""Rate limits and login back-off shared by every process on one store: two gateways
(app instances, or real ``gateway serve`` processes) on one PostgreSQL database or one
SQLite file count against the same buckets and the same failed logins. Expired buckets
and forgotten failures are pruned. No test measures time: buckets are drained by count."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from host.auth.passwords import hash_password
from tests.conftest import ADMIN, db_rows, running_app
from tests.test_login_backoff import STRANGER, assert_locked, login
from tests.test_rate_limits import assert_429

pytestmark = pytest.mark.usefixtures("store_url")

TOKEN = "shared-token-0123456789"
SHARED = {"Authorization": f"Bearer {TOKEN}"}
ALICE_PW = "alice's shared passphrase"
ALICE_HASH = hash_password(ALICE_PW)


def limited_token(per_minute: int, burst: int | None = None) -> dict[str, Any]:
    limit: dict[str, Any] = {"per_minute": per_minute}
    if burst is not None:
        limit["burst"] = burst
    return {"tokens": {"shared": {"token": TOKEN, "gates": ["*"], "rate_limit": limit}}}


async def two_gateways(stack: AsyncExitStack, settings: Any) -> list[Any]:
    """Two app instances on one store, as two replicas (or two workers) are."""
    return [(await stack.enter_async_context(running_app(settings)))[1] for _ in range(2)]


async def test_two_replicas_share_one_bucket_per_principal(make_settings, store_url):
    # workers = 2: the processes of `gateway serve --workers 2` share one store, so the
    # buckets are in it on SQLite too (on PostgreSQL they always are).
    settings = make_settings(server={"workers": 2}, auth=limited_token(per_minute=1, burst=4))
    async with AsyncExitStack() as stack:
        a, b = await two_gateways(stack, settings)
        for client in (a, b, a, b):
            assert (await client.get("/gateway/status", headers=SHARED)).status_code == 200
        # The fifth request across both is over the burst of 4, on either replica.
        for client in (a, b):
            refused = await client.get("/gateway/status", headers=SHARED)
            assert 1 <= assert_429(refused, await refused.get_json()) <= 60
        # Other principals have their own bucket.
        assert (await b.get("/gateway/status", headers=ADMIN)).status_code == 200
    rows = await db_rows(store_url, "SELECT key FROM gateway_rate_buckets")
    assert ("token:shared",) in rows


async def test_concurrent_requests_of_one_principal_take_exactly_the_burst(make_settings):
    # Requests arriving together share one statement per key (a batch asks for as many
    # tokens as it has requests): still exactly the burst passes, the rest get 429.
    settings = make_settings(server={"workers": 2}, auth=limited_token(per_minute=1, burst=7))
    async with AsyncExitStack() as stack:
        a, b = await two_gateways(stack, settings)
        answers = await asyncio.gather(
            *(client.get("/gateway/status", headers=SHARED) for client in (a, b) * 15)
        )
        codes = [r.status_code for r in answers]
        assert codes.count(200) == 7 and codes.count(429) == 23, codes
        for refused in (r for r in answers if r.status_code == 429):
            assert 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_failed_auth_on_one_replica_throttles_the_address_on_the_other(make_settings):
    settings = make_settings(server={"workers": 2}, auth={"failed_auth_limit": {"per_minute": 2}})
    bad = {"Authorization": "Bearer wrong-token-0123456789"}
    async with AsyncExitStack() as stack:
        a, b = await two_gateways(stack, settings)
        assert (await a.get("/gateway/status", headers=bad)).status_code == 401
        assert (await b.get("/gateway/status", headers=bad)).status_code == 401
        refused = await a.get("/gateway/status", headers=bad)
        assert_429(refused, await refused.get_json())


async def test_one_process_keeps_its_buckets_in_memory_on_sqlite(make_settings, store_url):
    settings = make_settings(auth=limited_token(per_minute=1, burst=1))
    async with running_app(settings) as (_app, client):
        assert (await client.get("/gateway/status", headers=SHARED)).status_code == 200
        refused = await client.get("/gateway/status", headers=SHARED)
        assert_429(refused, await refused.get_json())
    rows = await db_rows(store_url, "SELECT key FROM gateway_rate_buckets")
    # One SQLite process: nothing to share, nothing written per request.
    assert rows == ([] if store_url.startswith("sqlite") else [("token:shared",)])


async def test_process_state_keeps_buckets_in_each_process_even_on_postgresql(
    make_settings, store_url
):
    settings = make_settings(
        auth={**limited_token(per_minute=1, burst=1), "rate_limit_state": "process"}
    )
    async with AsyncExitStack() as stack:
        a, b = await two_gateways(stack, settings)
        for client in (a, b):
            assert (await client.get("/gateway/status", headers=SHARED)).status_code == 200
    assert await db_rows(store_url, "SELECT key FROM gateway_rate_buckets") == []


async def test_failed_logins_on_one_replica_back_off_logins_on_the_other(make_settings):
    settings = make_settings(
        auth={
            "mode": "password-session",
            "users": {"alice": {"password_hash": ALICE_HASH, "gates": ["*"]}},
            "login_backoff": {"free_failures": 2, "base_seconds": 60},
        }
    )
    async with AsyncExitStack() as stack:
        a, b = await two_gateways(stack, settings)
        assert (await login(a, "alice", "guess 1", STRANGER)).status_code == 401
        assert (await login(b, "alice", "guess 2", STRANGER)).status_code == 401
        # Replica B refuses the right password from that address: A's failures count.
        assert 59 <= await assert_locked(await login(b, "alice", ALICE_PW, STRANGER)) <= 60
        await assert_locked(await login(a, "alice", ALICE_PW, STRANGER))


async def test_parallel_guesses_across_replicas_cannot_slip_past_the_limit(make_settings):
    settings = make_settings(
        auth={
            "mode": "password-session",
            "users": {"alice": {"password_hash": ALICE_HASH}},
            "login_backoff": {"free_failures": 3, "base_seconds": 60},
        }
    )
    async with AsyncExitStack() as stack:
        a, b = await two_gateways(stack, settings)
        answers = await asyncio.gather(
            *(login((a, b)[i % 2], "alice", f"guess {i}", STRANGER) for i in range(10))
        )
        assert sorted(r.status_code for r in answers) == [401] * 3 + [429] * 7


async def test_two_serve_processes_hammering_one_key_never_exceed_its_limit(live_server, store_url):
    # Two separate `gateway serve` processes on one store: on SQLite they are not
    # workers of one serve, so `rate_limit_state = "store"` says they share it.
    auth = {**limited_token(per_minute=1, burst=10), "rate_limit_state": "store"}
    config = {"auth": auth, "storage": {"url": store_url}}
    servers = [live_server(config=config) for _ in range(2)]

    async def hammer(http: httpx.AsyncClient, url: str) -> list[int]:
        answers = await asyncio.gather(
            *(http.get(f"{url}/gateway/status", headers=SHARED) for _ in range(15))
        )
        return [r.status_code for r in answers]

    async with httpx.AsyncClient(timeout=30) as http:
        results = await asyncio.gather(*(hammer(http, s.url) for s in servers))
    codes = [c for result in results for c in result]
    # A burst of 10 that refills one token a minute: 10 of the 30 pass, whoever serves.
    assert codes.count(200) == 10, codes
    assert codes.count(429) == 20, codes


async def test_the_workers_of_one_serve_share_the_limit(live_server, store_url):
    # `gateway serve --workers 2` with no setting: "auto" puts the buckets in the store,
    # SQLite included, since two processes serve.
    server = live_server(
        config={"auth": limited_token(per_minute=1, burst=10)}, args=["--workers", "2"]
    )

    async def one() -> int:
        # A connection of its own each: the kernel hands them to either worker.
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(f"{server.url}/gateway/status", headers=SHARED)
            return response.status_code

    codes = await asyncio.gather(*(one() for _ in range(24)))
    assert codes.count(200) == 10 and codes.count(429) == 14, codes
    assert await db_rows(server.store_url, "SELECT key FROM gateway_rate_buckets") == [
        ("token:shared",)
    ]


async def test_full_buckets_and_forgotten_failures_are_pruned(make_settings, store_url):
    from host.context import context
    from host.retention import prune_host
    from host.storage import now_ms

    settings = make_settings(
        server={"workers": 2},
        auth={
            **limited_token(per_minute=600_000),  # refills a token every 0.1 ms
            "mode": "password-session",
            "users": {"alice": {"password_hash": ALICE_HASH}},
            "login_backoff": {"forget_after_seconds": 1},
        },
    )
    async with running_app(settings) as (app, client):
        assert (await client.get("/gateway/status", headers=SHARED)).status_code == 200
        assert (await login(client, "alice", "guess", STRANGER)).status_code == 401
        store = context(app).store
        later = now_ms() + 5_000
        dry = await prune_host(store, settings, later, dry_run=True)
        assert dry["rate_limits"] >= 1 and dry["login_failures"] == 2
        # A bucket still refilling and failures still remembered are kept.
        assert (await prune_host(store, settings, now_ms() - 5_000, dry_run=False))[
            "login_failures"
        ] == 0
        removed = await prune_host(store, settings, later, dry_run=False)
        assert removed["rate_limits"] == dry["rate_limits"]
        assert removed["login_failures"] == 2
    assert await db_rows(store_url, "SELECT key FROM gateway_login_failures") == []
    assert await db_rows(store_url, "SELECT key FROM gateway_rate_buckets") == []


async def test_a_bucket_connection_the_database_dropped_is_replaced_not_a_500(
    make_settings, store_url
):
    if store_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only: its server ends connections (restart, failover, admin)")
    postgres_url = store_url
    settings = make_settings(auth=limited_token(per_minute=600, burst=100))
    async with running_app(settings) as (_app, client):
        assert (await client.get("/gateway/status", headers=SHARED)).status_code == 200
        ended = await db_rows(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert ended and all(ok for (ok,) in ended)
        for _ in range(3):
            assert (await client.get("/gateway/status", headers=SHARED)).status_code == 200
