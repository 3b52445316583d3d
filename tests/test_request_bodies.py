"""Request bodies: read only after authentication and within
``server.body_read_timeout_seconds``; strict JSON on every route (no ``NaN`` or
``Infinity``, a malformed optional body is a 400, never silently ignored), in WebSocket
frames and in the signed webhook; plain HTTP to the WebSocket route asks for credentials
first."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from host.app import create_app
from host.context import context
from host.strict_json import parse_json
from tests.conftest import ADMIN, ADMIN_TOKEN, running_app
from tests.openai_helpers import served
from tests.pipelines_fixtures import PIPELINES_SOURCE, signed

# A guard against a hung test, not a timing assertion.
GUARD_SECONDS = 30
BAD_BODIES = [
    (b"{bad", "Expecting property name"),
    (b'{"a": NaN}', "NaN"),
    (b'{"a": [1, -Infinity]}', "-Infinity"),
    (b'{"a": Infinity}', "Infinity"),
    (b'{"a": 1e999}', "1e999"),
]


def error_of(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    return dict(body["error"])


async def response_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, Any]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_SECONDS)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    body = json.loads(await asyncio.wait_for(reader.readexactly(length), GUARD_SECONDS))
    return head, body


def chunked_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"PATCH {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += ["Content-Type: application/json", "Transfer-Encoding: chunked"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- authentication before the body ----------------------------------------------------------


async def test_an_anonymous_chunked_upload_is_refused_with_401_before_its_body_is_read(
    make_settings,
):
    """Headers and the first chunk only, the body never finished: the answer is the 401
    (with a 300 s body timeout, a body read first would hold the request that long)."""
    app = create_app(make_settings(server={"body_read_timeout_seconds": 300}))
    async with served(app) as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(chunked_head("/gateway/config", {}) + b'6\r\n{"even\r\n')
        await writer.drain()
        head, body = await response_head(reader)
        writer.close()
    assert head.startswith(b"HTTP/1.1 401"), head
    assert b"www-authenticate: bearer" in head.lower()
    error_of(body, "unauthorized")


async def test_an_authenticated_body_that_stalls_gets_408_and_changes_nothing(make_settings):
    settings = make_settings(server={"body_read_timeout_seconds": 1})
    app = create_app(settings)
    async with served(app) as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        writer.write(chunked_head("/gateway/config", auth) + b'6\r\n{"even\r\n')
        await writer.drain()
        head, body = await response_head(reader)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    error = error_of(body, "request_timeout")
    assert "1 s" in error["message"]
    assert not settings.overrides_path.exists()


# -- strict JSON, every route ----------------------------------------------------------------


def body_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route that may take a body, placeholders filled."""
    out = []
    for route in context(app).routes:
        view = app.view_functions[route.endpoint]
        if route.websocket or getattr(view, "_gateway_raw_body", False):
            continue
        path = re.sub(r"<[^>]*>", "x", route.rule)
        out += [(m, path) for m in route.methods if m in ("POST", "PUT", "PATCH", "DELETE")]
    return out


@pytest.mark.parametrize(("raw", "named"), BAD_BODIES)
async def test_a_body_that_is_not_strict_json_is_400_invalid_json_on_every_route(
    make_settings, raw, named
):
    settings = make_settings(auth={"mode": "password-session", "password": "pw-0123456789"})
    async with running_app(settings) as (app, client):
        routes = body_routes(app)
        assert ("POST", "/gateway/pause") in routes and ("POST", "/v1/responses") in routes
        for method, path in routes:
            response = await client.open(
                path,
                method=method,
                data=raw,
                headers={**ADMIN, "Content-Type": "application/json"},
            )
            assert response.status_code == 400, (method, path)
            error = error_of(await response.get_json(), "invalid_json")
            assert named in error["message"], (method, path, error)
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["state"] == "running"
        assert int(status["auth"]["total_sessions_issued"]) == 0
    assert not settings.overrides_path.exists()


async def test_a_malformed_optional_body_does_not_pause(client):
    response = await client.post(
        "/gateway/pause", data=b"{bad", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error_of(await response.get_json(), "invalid_json")
    status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
    assert status["state"] == "running"
    # An empty body with the JSON content type is no body: the pause goes through.
    empty = await client.post(
        "/gateway/pause", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert empty.status_code == 200


async def test_nan_temperature_on_chat_completions_is_400_invalid_json(client):
    response = await client.post(
        "/v1/chat/completions",
        data=b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}],'
        b' "temperature": NaN}',
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "NaN" in error_of(await response.get_json(), "invalid_json")["message"]


def test_parse_json_refuses_non_finite_numbers_and_keeps_finite_ones():
    assert parse_json(b'{"t": 0.5, "n": -1e308, "i": 12}') == {"t": 0.5, "n": -1e308, "i": 12}
    for raw, named in BAD_BODIES:
        with pytest.raises(ValueError, match=re.escape(named)):
            parse_json(raw)


async def test_a_websocket_frame_with_nan_gets_an_invalid_json_error_frame(client):
    async with client.websocket("/gateway/ws", headers=ADMIN) as ws:
        await ws.send(
            '{"schema_version": 1, "request_id": "n1", "kind": "capabilities.request",'
            ' "payload": {"x": NaN}}'
        )
        frame = json.loads(await asyncio.wait_for(ws.receive(), GUARD_SECONDS))
        assert frame["kind"] == "error"
        assert frame["payload"]["code"] == "invalid_json"
        assert "NaN" in frame["payload"]["message"]
        # The socket keeps working.
        await ws.send(
            '{"schema_version": 1, "request_id": "c1", "kind": "capabilities.request",'
            ' "payload": {}}'
        )
        while (answer := json.loads(await asyncio.wait_for(ws.receive(), GUARD_SECONDS)))[
            "kind"
        ] == "gateway.heartbeat":
            pass
        assert answer["kind"] == "capabilities.response"


async def test_a_signed_webhook_body_with_nan_is_400_and_starts_no_run(
    make_settings, tmp_path: Path
):
    directory = tmp_path / "pipelines"
    directory.mkdir()
    (directory / "testing.py").write_text(PIPELINES_SOURCE)
    settings = make_settings(
        plugins={
            "pipelines": {
                "directory": str(directory),
                "webhooks": {"gh": {"pipeline": "three", "secret": "s3cret"}},
            }
        }
    )
    async with running_app(settings) as (_app, client):
        body = b'{"n": NaN}'
        for content_type in ("application/json", "text/plain"):
            headers = {**signed(body, f"d-{content_type}"), "Content-Type": content_type}
            response = await client.post("/triggers/webhook:gh/webhook", data=body, headers=headers)
            assert response.status_code == 400, content_type
            assert "NaN" in error_of(await response.get_json(), "invalid_json")["message"]
        runs = await (await client.get("/runs", headers=ADMIN)).get_json()
        assert runs["runs"] == []
        # A good body still fires (the webhook declares a raw body: no content type needed).
        good = b'{"n": 2}'
        headers = {**signed(good, "d-good"), "Content-Type": "text/plain"}
        fired = await client.post("/triggers/webhook:gh/webhook", data=good, headers=headers)
        assert fired.status_code == 202, await fired.get_data(as_text=True)


# -- plain HTTP to the WebSocket route ---------------------------------------------------------


async def test_plain_get_of_the_websocket_route_asks_for_credentials_first(client):
    anonymous = await client.get("/gateway/ws")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    error_of(await anonymous.get_json(), "unauthorized")
    wrong = await client.get("/gateway/ws", query_string={"access_token": "wrong"})
    assert wrong.status_code == 401
    for kwargs in ({"headers": ADMIN}, {"query_string": {"access_token": ADMIN_TOKEN}}):
        authenticated = await client.get("/gateway/ws", **kwargs)
        assert authenticated.status_code == 400
        error_of(await authenticated.get_json(), "websocket_required")
