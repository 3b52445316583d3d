"""``/gateway/ws``: the seed-004 frame protocol. Auth at the handshake (header, or
``?access_token=`` for browsers), request/response kinds, typed error frames for malformed
input on a socket that keeps working, server heartbeats, per-principal rate limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from quart.testing.connections import WebsocketResponseError

from tests.conftest import ADMIN, ADMIN_TOKEN, READER, running_app

WS = "/gateway/ws"
# A guard against a hung test, not a timing assertion.
RECEIVE_GUARD_SECONDS = 10


def request_frame(kind: str, request_id: str = "r1", **payload: Any) -> str:
    return json.dumps(
        {"schema_version": 1, "request_id": request_id, "kind": kind, "payload": payload}
    )


async def receive(ws: Any, skip_heartbeats: bool = True) -> dict[str, Any]:
    while True:
        raw = await asyncio.wait_for(ws.receive(), RECEIVE_GUARD_SECONDS)
        frame: dict[str, Any] = json.loads(raw)
        assert set(frame) == {"schema_version", "request_id", "kind", "payload"}, frame
        assert frame["schema_version"] == 1
        if skip_heartbeats and frame["kind"] == "gateway.heartbeat":
            continue
        return frame


async def ask(ws: Any, kind: str, request_id: str = "r1", **payload: Any) -> dict[str, Any]:
    await ws.send(request_frame(kind, request_id, **payload))
    return await receive(ws)


async def refused_handshake(client: Any, **kwargs: Any) -> Any:
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket(WS, **kwargs) as ws:
            await ws.send(request_frame("capabilities.request"))
            await asyncio.wait_for(ws.receive(), RECEIVE_GUARD_SECONDS)
    return refused.value.response


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"headers": {"Authorization": "Bearer wrong-token"}},
        {"query_string": {"access_token": "wrong-token"}},
        {"query_string": {"access_token": ""}},
    ],
)
async def test_handshake_without_valid_credentials_is_refused_with_401(client, kwargs):
    response = await refused_handshake(client, **kwargs)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    body = await response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "unauthorized"
    assert body["error"]["type"] == "authentication_error"


async def test_bearer_header_opens_the_socket_and_capabilities_list_request_kinds(client):
    async with client.websocket(WS, headers=READER) as ws:
        frame = await ask(ws, "capabilities.request", "caps-1")
    assert frame["kind"] == "capabilities.response"
    assert frame["request_id"] == "caps-1"
    caps = frame["payload"]
    assert {"capabilities.request", "gateway.status.request"} <= set(caps["request_kinds"])
    assert {"capabilities.response", "gateway.status.response", "error", "gateway.heartbeat"} <= (
        set(caps["response_kinds"])
    )
    assert caps["supported_request_schema_versions"] == [0, 1]
    assert caps["contracts"]["heartbeat"]["kind"] == "gateway.heartbeat"


async def test_access_token_query_opens_the_socket_for_browsers(client):
    async with client.websocket(WS, query_string={"access_token": ADMIN_TOKEN}) as ws:
        frame = await ask(ws, "gateway.status.request", "st-1")
    assert frame["kind"] == "gateway.status.response"
    assert frame["payload"]["auth"]["principal"]["name"] == "admin"


async def test_gateway_status_request_reports_state_and_principal(client):
    assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 200
    async with client.websocket(WS, headers=READER) as ws:
        frame = await ask(ws, "gateway.status.request", "st-2")
    assert frame["kind"] == "gateway.status.response"
    assert frame["request_id"] == "st-2"
    assert frame["payload"]["state"] == "paused"
    assert frame["payload"]["auth"]["principal"] == {
        "name": "reader",
        "kind": "token",
        "gates": [],
    }


def _frame(**fields: Any) -> str:
    base: dict[str, Any] = {
        "schema_version": 1,
        "request_id": "bad-1",
        "kind": "capabilities.request",
        "payload": {},
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP})


_DROP = object()

MALFORMED: list[tuple[str | bytes, str, str]] = [
    ("this is not json", "invalid_json", "unknown-request"),
    ("[1, 2, 3]", "invalid_json", "unknown-request"),
    (_frame(payload=_DROP), "invalid_json", "bad-1"),
    (_frame(kind=_DROP, schema_version=_DROP), "invalid_json", "bad-1"),
    (_frame(schema_version=99), "unsupported_schema", "bad-1"),
    (_frame(schema_version=True), "unsupported_schema", "bad-1"),
    (_frame(schema_version="1"), "unsupported_schema", "bad-1"),
    (_frame(request_id=""), "invalid_request_id", "unknown-request"),
    (_frame(request_id=17), "invalid_request_id", "unknown-request"),
    (_frame(kind="no.such.request"), "unsupported_kind", "bad-1"),
    (_frame(kind=None), "unsupported_kind", "bad-1"),
    (_frame(payload=[]), "invalid_payload", "bad-1"),
    (_frame(payload="x"), "invalid_payload", "bad-1"),
    (b"\xff\xfe\x00not utf-8", "invalid_payload", "unknown-request"),
    ("[" * 200_000, "invalid_json", "unknown-request"),  # nested too deeply for json
]


async def test_malformed_frames_get_typed_errors_and_the_socket_keeps_working(client):
    async with client.websocket(WS, headers=ADMIN) as ws:
        for raw, code, request_id in MALFORMED:
            await ws.send(raw)
            frame = await receive(ws)
            assert frame["kind"] == "error", raw
            assert frame["payload"]["code"] == code, raw
            assert frame["payload"]["message"], raw
            assert frame["request_id"] == request_id, raw
        ok = await ask(ws, "capabilities.request", "after-errors")
        assert ok["kind"] == "capabilities.response"
        assert ok["request_id"] == "after-errors"
        # schema_version 0 (seed-004 clients) is still accepted.
        await ws.send(_frame(schema_version=0, request_id="v0"))
        legacy = await receive(ws)
        assert (legacy["kind"], legacy["request_id"]) == ("capabilities.response", "v0")


async def test_missing_fields_are_named_in_the_error(client):
    async with client.websocket(WS, headers=ADMIN) as ws:
        await ws.send(_frame(payload=_DROP))
        frame = await receive(ws)
    assert frame["payload"]["code"] == "invalid_json"
    assert "payload" in frame["payload"]["message"]


async def test_server_sends_heartbeat_frames(make_settings):
    settings = make_settings(events={"heartbeat_seconds": 0.2})
    async with running_app(settings) as (_app, client):
        async with client.websocket(WS, headers=READER) as ws:
            first = await receive(ws, skip_heartbeats=False)
            second = await receive(ws, skip_heartbeats=False)
            # Requests are still answered between heartbeats.
            reply = await ask(ws, "capabilities.request", "between-beats")
    for beat in (first, second):
        assert beat["kind"] == "gateway.heartbeat"
        assert beat["request_id"] == "gateway-heartbeat"
        assert isinstance(beat["payload"]["ts_unix_ms"], int)
    assert second["payload"]["ts_unix_ms"] >= first["payload"]["ts_unix_ms"]
    assert reply["kind"] == "capabilities.response"
    assert reply["payload"]["contracts"]["heartbeat"]["interval_seconds"] == 0.2


async def test_frames_count_against_the_principals_rate_limit(make_settings, store_url):
    # On PostgreSQL the bucket is in the store, shared with HTTP requests of any replica.
    settings = make_settings(
        events={"heartbeat_seconds": 0.2},
        auth={
            "tokens": {"slow": {"token": "slow-token-0123456789", "rate_limit": {"per_minute": 3}}}
        },
    )
    slow = {"Authorization": "Bearer slow-token-0123456789"}
    async with running_app(settings) as (_app, client):
        async with client.websocket(WS, headers=slow) as ws:
            # The handshake took one token from the bucket of 3; two frames remain.
            for i in range(2):
                ok = await ask(ws, "capabilities.request", f"ok-{i}")
                assert ok["kind"] == "capabilities.response"
            limited = await ask(ws, "capabilities.request", "too-many")
            assert limited["kind"] == "error"
            assert limited["request_id"] == "too-many"
            assert limited["payload"]["code"] == "rate_limited"
            assert limited["payload"]["retry_after_seconds"] >= 1
            # The socket stays open: the server still sends on it, and further frames get
            # answered (with the same typed error while the bucket is empty).
            beat = await receive(ws, skip_heartbeats=False)
            assert beat["kind"] == "gateway.heartbeat"
            again = await ask(ws, "gateway.status.request", "still-here")
            assert (again["request_id"], again["payload"]["code"]) == ("still-here", "rate_limited")

            # Another principal's socket is unaffected.
            async with client.websocket(WS, headers=ADMIN) as other:
                fine = await ask(other, "capabilities.request", "admin")
                assert fine["kind"] == "capabilities.response"

        # The bucket is the principal's, HTTP and WebSocket alike.
        http = await client.get("/gateway/status", headers=slow)
        assert http.status_code == 429
        assert (await http.get_json())["error"]["code"] == "rate_limited"
