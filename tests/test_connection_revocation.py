"""Long-lived connections end with their credential: a WebSocket or an event stream opened
with a session that is then revoked or expires, or with a token a config PATCH removes,
is closed within seconds (WebSocket: an ``unauthorized`` error frame, then close code
4401; SSE / JSONL: a final ``stream.closing`` event with reason ``unauthorized``), while
connections of other credentials stay open. Through a real Hypercorn server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from host.app import create_app
from host.settings import Settings
from tests.conftest import ADMIN, READER_TOKEN, bearer
from tests.openai_helpers import served
from tests.test_auth_modes import PASSWORD, session_settings

# Heartbeats far apart: a connection that ends did so because of its credential.
QUIET = {"events": {"heartbeat_seconds": 30}}
# How soon a revoked credential must end its connection (the re-check runs every second).
CLOSE_WITHIN_SECONDS = 5
TEMP_TOKEN_ENV = "GW_TEST_TEMP_TOKEN"
TEMP_TOKEN = "test-temporary-token-0123456789"


class Gateway:
    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http

    async def session(self) -> str:
        answer = await self.http.post("/gateway/auth/session", json={"password": PASSWORD})
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def socket(self, token: str, query: bool = False) -> Any:
        url = self.url.replace("http://", "ws://") + "/gateway/ws"
        if query:
            return connect(f"{url}?access_token={token}")
        return connect(url, additional_headers=bearer(token))


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings, load_entrypoints=False)
    async with served(app) as server, httpx.AsyncClient(base_url=server.url) as http:
        yield Gateway(server.url, http)


def request_frame(request_id: str) -> str:
    return json.dumps(
        {
            "schema_version": 1,
            "request_id": request_id,
            "kind": "gateway.status.request",
            "payload": {},
        }
    )


async def status_answer(ws: ClientConnection, request_id: str) -> dict[str, Any]:
    await ws.send(request_frame(request_id))
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["kind"] != "gateway.heartbeat":
            return frame


async def closed_unauthorized(ws: ClientConnection) -> dict[str, Any]:
    """The frames up to the close: the last is an ``unauthorized`` error; code 4401."""
    frames: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(CLOSE_WITHIN_SECONDS):
            while True:
                frames.append(json.loads(await ws.recv()))
    assert ws.close_code == 4401
    assert ws.close_reason == "unauthorized"
    assert frames, "no error frame before the close"
    last = frames[-1]
    assert last["kind"] == "error"
    assert last["payload"]["code"] == "unauthorized"
    assert last["payload"]["message"]
    assert all(f["kind"] in ("gateway.heartbeat", "error") for f in frames), frames
    return last


async def stream_lines_until_end(response: httpx.Response) -> list[str]:
    """Every line of an open stream until the server ends it (guarded by a deadline)."""
    lines: list[str] = []
    async with asyncio.timeout(CLOSE_WITHIN_SECONDS):
        async for line in response.aiter_lines():
            lines.append(line)
    return lines


def closing_reason_sse(lines: list[str]) -> str:
    assert "event: stream.closing" in lines, lines
    data = lines[lines.index("event: stream.closing") + 1]
    assert data.startswith("data: ")
    reason: str = json.loads(data[len("data: ") :])["reason"]
    return reason


async def test_revoked_session_closes_its_socket_and_its_sse_stream_but_not_another_session(
    make_settings, monkeypatch, store_url
):
    settings = session_settings(
        lambda **kw: make_settings(**kw, **QUIET), monkeypatch, session_ttl_seconds=600
    )
    async with gateway(settings) as gw:
        mine, other = await gw.session(), await gw.session()
        async with (
            gw.socket(mine, query=True) as my_ws,
            gw.socket(other) as other_ws,
            gw.http.stream("GET", "/gateway/events", headers=bearer(mine)) as my_sse,
        ):
            assert my_sse.status_code == 200
            assert (await status_answer(my_ws, "before"))["kind"] == "gateway.status.response"
            logout = await gw.http.delete("/gateway/auth/session", headers=bearer(mine))
            assert logout.status_code == 200 and logout.json() == {"revoked": 1}
            started = time.monotonic()
            # A frame sent now is refused, not answered; the socket closes.
            await my_ws.send(request_frame("after"))
            error = await closed_unauthorized(my_ws)
            assert error["request_id"] in ("after", "gateway-heartbeat")
            lines = await stream_lines_until_end(my_sse)
            assert closing_reason_sse(lines) == "unauthorized"
            assert time.monotonic() - started < CLOSE_WITHIN_SECONDS
            # The other session's socket is untouched and still answers.
            assert (await status_answer(other_ws, "still"))["kind"] == "gateway.status.response"


async def test_expired_session_closes_its_idle_socket_and_jsonl_stream(
    make_settings, monkeypatch, store_url
):
    settings = session_settings(
        lambda **kw: make_settings(**kw, **QUIET), monkeypatch, session_ttl_seconds=2
    )
    async with gateway(settings) as gw:
        token = await gw.session()
        jsonl = {**bearer(token), "Accept": "application/x-ndjson"}
        async with (
            gw.socket(token) as ws,
            gw.http.stream("GET", "/gateway/events", headers=jsonl) as stream,
        ):
            assert stream.status_code == 200
            assert (await status_answer(ws, "fresh"))["kind"] == "gateway.status.response"
            # Nothing is sent from here on: the socket is closed on a timer at expiry.
            error = await closed_unauthorized(ws)
            assert error["request_id"] == "gateway-heartbeat"
            lines = [json.loads(line) for line in await stream_lines_until_end(stream)]
            assert lines[-1]["type"] == "stream.closing"
            assert lines[-1]["reason"] == "unauthorized"
        # Plain HTTP with the token is refused too, as before.
        assert (await gw.http.get("/gateway/status", headers=bearer(token))).status_code == 401


async def test_token_removed_by_config_patch_closes_its_socket_not_other_tokens_sockets(
    make_settings, monkeypatch
):
    monkeypatch.setenv(TEMP_TOKEN_ENV, TEMP_TOKEN)
    allowed = {"secrets": {"allowed_env": [TEMP_TOKEN_ENV]}}
    async with gateway(make_settings(**QUIET, **allowed)) as gw:
        added = await gw.http.patch(
            "/gateway/config",
            json={"auth": {"tokens": {"temp": {"token": {"env": TEMP_TOKEN_ENV}}}}},
            headers=ADMIN,
        )
        assert added.status_code == 200, added.text
        async with gw.socket(TEMP_TOKEN) as temp_ws, gw.socket(READER_TOKEN) as ok:
            assert (await status_answer(temp_ws, "t1"))["kind"] == "gateway.status.response"
            removed = await gw.http.patch(
                "/gateway/config", json={"auth": {"tokens": {"temp": None}}}, headers=ADMIN
            )
            assert removed.status_code == 200, removed.text
            await closed_unauthorized(temp_ws)
            assert (await status_answer(ok, "r1"))["kind"] == "gateway.status.response"
        denied = await gw.http.get("/gateway/status", headers=bearer(TEMP_TOKEN))
        assert denied.status_code == 401
