"""Several ``gateway serve`` processes (replicas) on one PostgreSQL database: they start
together on an empty database (migrations under the lock), share the paused state and
auth sessions, and an SSE client of one replica gets the events made on another, in
order and without a gap, also across a reconnect with ``Last-Event-ID``.

Each replica has its own state directory, as replicas on different machines would; the
database URL reaches them through a secret reference (``{ env = ... }``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.conftest import ADMIN, LiveServer, db_rows, wait_healthy
from tests.test_serve_e2e import next_event, sse_blocks

URL_ENV = "GATEWAY_TEST_DATABASE_URL"
PASSWORD_ENV = "GATEWAY_TEST_OPERATOR_PASSWORD"
PASSWORD = "replicas share one operator password"
TIMEOUT = 30.0


def replica_config(**extra: Any) -> dict[str, Any]:
    return {"storage": {"url": {"env": URL_ENV}}, **extra}


def start_replicas(live_server: Any, url: str, n: int, **extra: Any) -> list[LiveServer]:
    """``n`` replicas started at once (none waits for another), then each healthy."""
    env = {URL_ENV: url, PASSWORD_ENV: PASSWORD}
    servers = [live_server(config=replica_config(**extra), env=env, wait=False) for _ in range(n)]
    for server in servers:
        wait_healthy(server, timeout=60)
    return servers


async def until(condition: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_replicas_starting_together_on_an_empty_database_share_pause_and_sessions(
    live_server, postgres_url
):
    auth = {"mode": "password-session", "password": {"env": PASSWORD_ENV}}
    a, b = start_replicas(live_server, postgres_url, 2, auth=auth)

    # Each migration is recorded once, and both replicas see the same schema.
    rows = await db_rows(postgres_url, "SELECT namespace, version FROM schema_migrations")
    assert len(rows) == len(set(rows)) and ("host", 1) in rows
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        status = [(await http.get(f"{s.url}/gateway/status", headers=ADMIN)).json() for s in (a, b)]
        assert status[0]["store"]["dialect"] == status[1]["store"]["dialect"] == "postgresql"
        assert status[0]["store"]["schema_versions"] == status[1]["store"]["schema_versions"]

        # A session issued by one replica is good on the other.
        issued = await http.post(f"{a.url}/gateway/auth/session", json={"password": PASSWORD})
        assert issued.status_code == 200, issued.text
        session = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        on_b = await http.get(f"{b.url}/gateway/status", headers=session)
        assert on_b.status_code == 200, on_b.text
        assert on_b.json()["auth"]["principal"]["kind"] == "session"

        # A pause on one replica is the state of both; so is the resume on the other.
        assert (await http.post(f"{a.url}/gateway/pause", headers=session)).status_code == 200
        state_b = (await http.get(f"{b.url}/gateway/status", headers=session)).json()
        assert state_b["state"] == "paused"
        again = await http.post(f"{b.url}/gateway/pause", headers=session)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "invalid_transition"
        assert (await http.post(f"{b.url}/gateway/resume", headers=session)).status_code == 200
        state_a = (await http.get(f"{a.url}/gateway/status", headers=session)).json()
        assert state_a["state"] == "running"

        # Logging out on one replica ends the session on the other too.
        out = await http.delete(f"{b.url}/gateway/auth/session", headers=session)
        assert out.status_code == 200 and out.json() == {"revoked": 1}

        async def refused_by_a() -> bool:
            response = await http.get(f"{a.url}/gateway/status", headers=session)
            return response.status_code == 401

        await until(refused_by_a, "replica A still accepts a session revoked on B")
    for server in (a, b):
        assert server.stop() == 0
        assert "Traceback" not in server.log()


async def sse(http: httpx.AsyncClient, server: LiveServer, **headers: str) -> Any:
    return http.stream("GET", f"{server.url}/gateway/events", headers={**ADMIN, **headers})


async def read_events(blocks: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(next_event(blocks), TIMEOUT) for _ in range(n)]


async def make_events(http: httpx.AsyncClient, server: LiveServer, n: int, paused: bool) -> bool:
    """``n`` gateway events made on ``server`` (pause, resume, ...); the paused state after."""
    for _ in range(n):
        path = "/gateway/resume" if paused else "/gateway/pause"
        response = await http.post(f"{server.url}{path}", headers=ADMIN)
        assert response.status_code == 200, response.text
        paused = not paused
    return paused


async def test_an_sse_client_of_one_replica_gets_every_event_made_on_another(
    live_server, postgres_url
):
    # The poll is as slow as it can be set: the events reach B's stream because the
    # database tells B (LISTEN/NOTIFY), and each read gives up long before a poll.
    a, b = start_replicas(
        live_server, postgres_url, 2, events={"poll_seconds": 60, "heartbeat_seconds": 60}
    )
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        async with await sse(http, b) as response:
            blocks = sse_blocks(response)
            paused = await make_events(http, a, 5, paused=False)
            first = await read_events(blocks, 5)
        assert [int(e["id"]) for e in first] == [1, 2, 3, 4, 5]
        assert [e["event"] for e in first] == ["gateway.paused", "gateway.resumed"] * 2 + [
            "gateway.paused"
        ]
        assert all(json.loads(e["data"])["stream"] == "gateway" for e in first)

        # Events made on A while the client is away, then more once it is back on B.
        paused = await make_events(http, a, 3, paused)
        async with await sse(http, b, **{"Last-Event-ID": first[-1]["id"]}) as response:
            blocks = sse_blocks(response)
            missed = await read_events(blocks, 3)
            paused = await make_events(http, a, 2, paused)
            live = await read_events(blocks, 2)
        assert [int(e["id"]) for e in missed + live] == [6, 7, 8, 9, 10]

        # The same position resumes on A too: the store, not a replica, holds the stream.
        async with await sse(http, a, **{"Last-Event-ID": "8"}) as response:
            tail = await read_events(sse_blocks(response), 2)
        assert [e["id"] for e in tail] == [e["id"] for e in live]
        assert [e["data"] for e in tail] == [e["data"] for e in live]
    for server in (a, b):
        assert server.stop() == 0
