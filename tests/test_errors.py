"""One error envelope everywhere: routing errors, oversized bodies, malformed JSON,
schema validation and unexpected exceptions all answer with JSON
``{"error": {"type", "code", "message"}}``, never HTML and never a stack trace."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from quart import Blueprint

from host.api import hookimpl
from host.app import create_app
from tests.conftest import ADMIN, running_app
from tests.openai_helpers import served

MAX_BODY = 2048
JSON_HEADERS = {**ADMIN, "Content-Type": "application/json"}


async def envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert status, JSON content type and envelope shape; return the inner error."""
    assert response.status_code == status, await response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/json")
    body = json.loads(await response.get_data(as_text=True))
    assert set(body) == {"error"}
    error = body["error"]
    assert {"type", "code", "message"} <= set(error)
    assert all(isinstance(error[k], str) and error[k] for k in ("type", "code", "message"))
    if code is not None:
        assert error["code"] == code, error
    text = json.dumps(body)
    assert "Traceback" not in text and "<html" not in text.lower()
    return dict(error)


def assert_nothing_written(settings: Any) -> None:
    assert not settings.overrides_path.exists()


async def config_events(client: Any) -> list[str]:
    page = await client.get("/gateway/events?format=json&limit=1000", headers=ADMIN)
    return [e["type"] for e in (await page.get_json())["events"]]


# -- routing ---------------------------------------------------------------------------------


async def test_unknown_path_is_a_json_404_with_or_without_credentials(client):
    for headers in ({}, ADMIN):
        error = await envelope(await client.get("/no/such/route", headers=headers), 404)
        assert error["code"] == "not_found"
        assert error["type"] == "not_found_error"


async def test_wrong_method_is_a_json_405_naming_the_allowed_methods(client):
    response = await client.delete("/health")
    await envelope(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}
    response = await client.put("/gateway/pause", headers=ADMIN)
    await envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


async def test_plain_http_request_to_the_websocket_route_is_a_json_400(client):
    error = await envelope(await client.get("/gateway/ws", headers=ADMIN), 400)
    assert error["code"] == "websocket_required"


# -- request size ----------------------------------------------------------------------------


def _big_patch() -> bytes:
    body = json.dumps({"plugins": {"control": {"note": "x" * (MAX_BODY + 500)}}}).encode()
    assert len(body) > MAX_BODY
    return body


async def test_oversized_body_with_content_length_is_refused_before_the_handler(make_settings):
    settings = make_settings(server={"max_body_bytes": MAX_BODY})
    async with running_app(settings) as (_app, client):
        body = _big_patch()
        for headers in (JSON_HEADERS, {"Content-Type": "application/json"}):
            response = await client.patch(
                "/gateway/config",
                data=body,
                headers={**headers, "Content-Length": str(len(body))},
            )
            error = await envelope(response, 413, "payload_too_large")
            assert str(MAX_BODY) in error["message"]
        assert_nothing_written(settings)
        assert "config.patched" not in await config_events(client)


async def test_oversized_chunked_body_without_content_length_is_refused(make_settings):
    settings = make_settings(server={"max_body_bytes": MAX_BODY})
    async with running_app(settings) as (_app, client):
        body = _big_patch()
        # Without credentials it is a 401: an unauthenticated body is never read.
        for headers, status in ((JSON_HEADERS, 413), ({"Content-Type": "application/json"}, 401)):
            async with client.request(
                "/gateway/config",
                method="PATCH",
                headers={**headers, "Transfer-Encoding": "chunked"},
            ) as conn:
                for start in range(0, len(body), 1000):
                    await conn.send(body[start : start + 1000])
                await conn.send_complete()
            response = await conn.as_response()
            error = await envelope(response, status)
            if status == 413:
                assert error["code"] == "payload_too_large"
                assert str(MAX_BODY) in error["message"]
        assert_nothing_written(settings)
        assert "config.patched" not in await config_events(client)


async def test_chunked_body_within_the_limit_still_reaches_the_handler(make_settings):
    settings = make_settings(server={"max_body_bytes": MAX_BODY})
    async with running_app(settings) as (_app, client):
        body = json.dumps({"events": {"heartbeat_seconds": 5}}).encode()
        async with client.request(
            "/gateway/config",
            method="PATCH",
            headers={**JSON_HEADERS, "Transfer-Encoding": "chunked"},
        ) as conn:
            await conn.send(body[:10])
            await conn.send(body[10:])
            await conn.send_complete()
        response = await conn.as_response()
        assert response.status_code == 200, await response.get_data(as_text=True)
        assert settings.overrides_path.is_file()
        assert "heartbeat_seconds = 5" in settings.overrides_path.read_text()


def test_real_server_refuses_a_streamed_chunked_body_over_the_limit(live_server):
    server = live_server(config={"server": {"max_body_bytes": MAX_BODY}})
    body = _big_patch()

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = httpx.patch(
        f"{server.url}/gateway/config",
        content=chunks(),
        headers={**JSON_HEADERS},
        timeout=30,
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not (server.state_dir / "config.overrides.toml").exists()


# -- malformed and invalid bodies ----------------------------------------------------------


def password_settings(make_settings):
    return make_settings(auth={"mode": "password-session", "password": "correct horse"})


async def sessions_issued(client: Any) -> int:
    status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
    return int(status["auth"]["total_sessions_issued"])


async def test_malformed_json_is_a_400_invalid_json(make_settings):
    settings = password_settings(make_settings)
    async with running_app(settings) as (_app, client):
        for path, method, headers in (
            ("/gateway/config", "PATCH", JSON_HEADERS),
            ("/gateway/auth/session", "POST", {"Content-Type": "application/json"}),
        ):
            response = await client.open(path, method=method, data=b'{"oops": ', headers=headers)
            error = await envelope(response, 400, "invalid_json")
            assert "JSON" in error["message"]
        assert_nothing_written(settings)
        assert await sessions_issued(client) == 0


async def test_body_that_is_not_utf8_is_invalid_json_not_a_crash(make_settings):
    settings = password_settings(make_settings)
    async with running_app(settings) as (_app, client):
        for path, method, headers in (
            ("/gateway/config", "PATCH", JSON_HEADERS),
            ("/gateway/auth/session", "POST", {"Content-Type": "application/json"}),
        ):
            response = await client.open(path, method=method, data=b"\xff\xfe{", headers=headers)
            error = await envelope(response, 400, "invalid_json")
            assert "JSON" in error["message"]
        assert_nothing_written(settings)
        assert await sessions_issued(client) == 0


async def test_json_nested_too_deeply_is_a_400_without_a_traceback(make_settings, caplog):
    settings = password_settings(make_settings)
    deep = b"[" * 200_000
    messages: list[str] = []
    async with running_app(settings) as (_app, client):
        for path, method, headers in (
            ("/gateway/auth/session", "POST", {"Content-Type": "application/json"}),  # public
            ("/gateway/config", "PATCH", JSON_HEADERS),  # past the auth guard's body check
            ("/v1/responses", "POST", JSON_HEADERS),
        ):
            response = await client.open(path, method=method, data=deep, headers=headers)
            messages.append((await envelope(response, 400, "invalid_json"))["message"])
        assert_nothing_written(settings)
        assert await sessions_issued(client) == 0
    # The schema-validated route says why; the others parse silently and say what they need.
    assert "nested too deeply" in messages[0]
    assert all("JSON" in message for message in messages), messages
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


async def test_wrong_field_type_names_the_field(make_settings):
    settings = password_settings(make_settings)
    async with running_app(settings) as (_app, client):
        response = await client.post("/gateway/auth/session", json={"password": 5})
        error = await envelope(response, 400, "invalid_request_body")
        assert error["param"] == "password"
        assert "password" in error["message"]
        response = await client.post("/gateway/auth/session", json={})
        error = await envelope(response, 400, "invalid_request_body")
        assert error["param"] == "password"
        response = await client.post("/gateway/auth/session", json=["correct horse"])
        error = await envelope(response, 400, "invalid_request_body")
        assert "JSON object" in error["message"]
        assert await sessions_issued(client) == 0


async def test_body_that_is_not_json_is_a_415(make_settings):
    settings = password_settings(make_settings)
    async with running_app(settings) as (_app, client):
        response = await client.post("/gateway/auth/session", form={"password": "correct horse"})
        await envelope(response, 415, "unsupported_media_type")
        response = await client.patch(
            "/gateway/config", data="events.heartbeat_seconds=5", headers=ADMIN
        )
        await envelope(response, 415, "unsupported_media_type")
        assert_nothing_written(settings)
        assert await sessions_issued(client) == 0


async def test_config_patch_that_toml_cannot_hold_is_a_400_and_writes_nothing(make_settings):
    # Found by the schemathesis run: null inside a list used to crash the TOML writer.
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config",
            json={"plugins": {"control": {"notes": ["a", None]}}},
            headers=ADMIN,
        )
        await envelope(response, 400, "config_invalid")
        assert_nothing_written(settings)
        assert "config.patched" not in await config_events(client)


async def test_event_position_beyond_64_bits_is_a_400(client):
    # Found by the schemathesis run: SQLite cannot bind such an integer.
    huge = str(2**64)
    response = await client.get(f"/gateway/events?format=json&after={huge}", headers=ADMIN)
    error = await envelope(response, 400, "invalid_parameter")
    assert "after" in error["message"]
    response = await client.get(
        "/gateway/events?format=json", headers={**ADMIN, "Last-Event-ID": huge}
    )
    error = await envelope(response, 400, "invalid_parameter")
    assert "Last-Event-ID" in error["message"]


# -- unexpected exceptions -----------------------------------------------------------------


class BoomPlugin:
    """A third-party plugin whose view fails with an unexpected exception."""

    @hookimpl
    def gateway_register_blueprints(self, register):
        bp = Blueprint("boom", __name__)

        @bp.get("/boom")
        async def boom():
            """Fails."""
            raise RuntimeError("secret-internal-detail at /srv/app/boom.py line 3")

        register(bp)


async def test_unexpected_exception_is_a_500_envelope_without_details(make_settings):
    async with running_app(make_settings(), extra_plugins=[("boom", BoomPlugin())]) as (
        _app,
        client,
    ):
        response = await client.get("/boom", headers=ADMIN)
        error = await envelope(response, 500, "internal_error")
        assert error["type"] == "server_error"
        text = await response.get_data(as_text=True)
        assert "secret-internal-detail" not in text
        assert "RuntimeError" not in text
        assert "boom.py" not in text
        # The gateway keeps serving after the failure.
        assert (await client.get("/health")).status_code == 200


async def test_a_body_that_stops_arriving_is_408_request_timeout(make_settings):
    """Over real Hypercorn: the headers promise 100 bytes, 10 come, then nothing; the
    body wait ends after Quart's BODY_TIMEOUT with the error envelope, and the handler
    never ran (nothing was written)."""
    app = create_app(make_settings(), load_entrypoints=False)
    app.config["BODY_TIMEOUT"] = 0.3
    async with served(app) as server:
        host, port = server.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"PATCH /gateway/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: " + ADMIN["Authorization"].encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"server":'
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408"), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = json.loads(await reader.readexactly(length))
        assert body["error"]["code"] == "request_timeout"
        assert body["error"]["type"] == "invalid_request_error"
        writer.close()
        async with httpx.AsyncClient(base_url=server.url) as client:
            shown = (await client.get("/gateway/config", headers=ADMIN)).json()
        assert shown["sources"]["overrides_present"] is False
