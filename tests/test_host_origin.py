"""Browsers: a ``Host`` the gateway does not serve (DNS rebinding) and a foreign ``Origin``
(a cross-site page) are refused in every auth mode, before authentication, on HTTP and on
WebSocket upgrades; configured CORS origins get a proper CORS answer; a non-empty body
must be ``application/json``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from quart.testing.connections import WebsocketResponseError

from host.settings import ConfigError
from tests.conftest import ADMIN, running_app

APP_ORIGIN = "https://app.example"
EVIL = "http://evil.example"


def error_of(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return dict(body["error"])


async def state(client: Any) -> str:
    status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
    return str(status["state"])


def dev(make_settings: Any, **extra: Any) -> Any:
    return make_settings(auth={"mode": "localhost-dev"}, **extra)


# -- Host ------------------------------------------------------------------------------------


async def test_a_rebound_host_is_refused_in_localhost_dev(make_settings):
    async with running_app(dev(make_settings)) as (_app, client):
        for host in ("evil.example:8787", "evil.example", "127.0.0.1.evil.example", ""):
            read = await client.get("/gateway/config", headers={"Host": host})
            assert read.status_code == 403, host
            error = error_of(await read.get_json(), "host_not_allowed")
            assert error["type"] == "permission_error"
            change = await client.post("/gateway/pause", headers={"Host": host})
            assert change.status_code == 403
        # Nothing was paused by the rebound page; loopback names on any port still work.
        for host in ("localhost:8787", "127.0.0.1:9999", "[::1]:8787", "LOCALHOST"):
            response = await client.get("/gateway/status", headers={"Host": host})
            assert response.status_code == 200, host
            assert (await response.get_json())["state"] == "running"


async def test_localhost_dev_serves_only_loopback_names_even_if_others_are_allowed(make_settings):
    settings = dev(make_settings, server={"allowed_hosts": ["*"]})
    async with running_app(settings) as (_app, client):
        refused = await client.get("/gateway/status", headers={"Host": "evil.example"})
        assert refused.status_code == 403
        assert "localhost-dev" in error_of(await refused.get_json(), "host_not_allowed")["message"]


async def test_token_mode_serves_the_bind_host_and_loopback_by_default(make_settings):
    settings = make_settings(server={"bind": "10.1.2.3:8787"})
    async with running_app(settings) as (_app, client):
        for host, status in (
            ("10.1.2.3:8787", 200),
            ("localhost", 200),
            ("evil.example", 403),
            ("10.1.2.4:8787", 403),
        ):
            response = await client.get("/gateway/status", headers={**ADMIN, "Host": host})
            assert response.status_code == status, host
        # Refused before authentication: no token needed to be told, no token leaks in.
        anonymous = await client.get("/gateway/status", headers={"Host": "evil.example"})
        error_of(await anonymous.get_json(), "host_not_allowed")


async def test_a_wildcard_bind_serves_ip_addresses_but_not_unlisted_names(make_settings):
    settings = make_settings(server={"bind": "0.0.0.0:8787"})
    async with running_app(settings) as (_app, client):
        for host, status in (
            ("192.0.2.7:8787", 200),
            ("[2001:db8::1]", 200),
            ("evil.example", 403),
        ):
            response = await client.get("/gateway/status", headers={**ADMIN, "Host": host})
            assert response.status_code == status, host


async def test_allowed_hosts_lists_the_names_served_and_star_serves_any(make_settings):
    listed = make_settings(server={"allowed_hosts": ["Gateway.Example.com"]})
    async with running_app(listed) as (_app, client):
        for host, status in (
            ("gateway.example.com", 200),
            ("gateway.example.com:443", 200),
            ("gateway.example.com.", 200),
            ("127.0.0.1:8787", 200),
            ("other.example.com", 403),
        ):
            response = await client.get("/gateway/status", headers={**ADMIN, "Host": host})
            assert response.status_code == status, host
    anything = make_settings(server={"allowed_hosts": ["*"]})
    async with running_app(anything) as (_app, client):
        response = await client.get("/gateway/status", headers={**ADMIN, "Host": "any.example"})
        assert response.status_code == 200


@pytest.mark.parametrize(
    "server",
    [
        {"allowed_hosts": ["gateway.example.com:8787"]},
        {"allowed_hosts": ["https://gateway.example.com"]},
        {"allowed_hosts": [""]},
        {"cors_origins": ["*"]},
        {"cors_origins": ["https://app.example/path"]},
        {"cors_origins": ["app.example"]},
        {"cors_origins": ["null"]},
    ],
)
def test_host_and_origin_settings_that_are_not_names_or_origins_are_refused(make_settings, server):
    with pytest.raises(ConfigError) as refused:
        make_settings(server=server)
    assert "server." in str(refused.value)


# -- Origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["localhost-dev", "token"])
async def test_a_cross_site_post_to_pause_is_refused(make_settings, mode):
    settings = dev(make_settings) if mode == "localhost-dev" else make_settings()
    async with running_app(settings) as (_app, client):
        for origin in (EVIL, "null", "http://localhost:9999"):
            response = await client.post(
                "/gateway/pause", headers={**ADMIN, "Origin": origin, "Host": "localhost:8787"}
            )
            assert response.status_code == 403, origin
            error = error_of(await response.get_json(), "origin_not_allowed")
            assert origin in error["message"]
            assert "Access-Control-Allow-Origin" not in response.headers
        assert await state(client) == "running"


async def test_a_same_origin_request_and_one_without_origin_pass(make_settings):
    async with running_app(dev(make_settings)) as (_app, client):
        same = await client.post(
            "/gateway/pause",
            headers={"Origin": "http://localhost:8787", "Host": "localhost:8787"},
        )
        assert same.status_code == 200, await same.get_data(as_text=True)
        assert "Access-Control-Allow-Origin" not in same.headers
        plain = await client.post("/gateway/resume")
        assert plain.status_code == 200


async def test_a_configured_origin_gets_cors_headers_and_preflight_works(make_settings):
    settings = make_settings(server={"cors_origins": [APP_ORIGIN]})
    async with running_app(settings) as (_app, client):
        preflight = await client.options(
            "/gateway/pause",
            headers={
                "Origin": APP_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204, await preflight.get_data(as_text=True)
        headers = preflight.headers
        assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert int(headers["Access-Control-Max-Age"]) > 0
        assert "Origin" in headers["Vary"]
        assert await state(client) == "running"  # a preflight does nothing

        actual = await client.post("/gateway/pause", headers={**ADMIN, "Origin": APP_ORIGIN})
        assert actual.status_code == 200
        assert actual.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "Origin" in actual.headers["Vary"]
        assert await state(client) == "paused"
        # Errors carry the header too, so the page can read them.
        anonymous = await client.get("/gateway/status", headers={"Origin": APP_ORIGIN})
        assert anonymous.status_code == 401
        assert anonymous.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        # Responses to other callers still say they vary by Origin (caches).
        plain = await client.get("/health")
        assert "Origin" in plain.headers["Vary"]
        assert "Access-Control-Allow-Origin" not in plain.headers

        other = await client.options(
            "/gateway/pause",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        )
        assert other.status_code == 403
        error_of(await other.get_json(), "origin_not_allowed")
        assert "Access-Control-Allow-Origin" not in other.headers


# -- WebSocket -------------------------------------------------------------------------------


async def refused_upgrade(client: Any, headers: dict[str, str]) -> Any:
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket("/gateway/ws", headers=headers) as ws:
            await ws.send(json.dumps({"schema_version": 1}))
            await asyncio.wait_for(ws.receive(), 10)  # a guard, not a timing assertion
    return refused.value.response


async def test_a_websocket_upgrade_with_a_foreign_origin_is_refused(make_settings):
    for settings, headers in (
        (make_settings(), ADMIN),
        (dev(make_settings), {}),
    ):
        async with running_app(settings) as (_app, client):
            response = await refused_upgrade(client, {**headers, "Origin": EVIL})
            assert response.status_code == 403
            error_of(json.loads(await response.get_data()), "origin_not_allowed")
            rebound = await refused_upgrade(client, {**headers, "Host": "evil.example"})
            assert rebound.status_code == 403
            error_of(json.loads(await rebound.get_data()), "host_not_allowed")
            same = {**headers, "Origin": "http://localhost:8787", "Host": "localhost:8787"}
            async with client.websocket("/gateway/ws", headers=same) as ws:
                await ws.send(
                    json.dumps(
                        {
                            "schema_version": 1,
                            "request_id": "c1",
                            "kind": "capabilities.request",
                            "payload": {},
                        }
                    )
                )
                frame = json.loads(await asyncio.wait_for(ws.receive(), 10))
            assert frame["kind"] == "capabilities.response"


# -- Content-Type ----------------------------------------------------------------------------


async def test_a_text_plain_post_is_refused_with_415_and_changes_nothing(make_settings):
    async with running_app(dev(make_settings)) as (_app, client):
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            response = await client.post("/gateway/pause", data=b'{"a": 1}', headers=headers)
            assert response.status_code == 415, content_type
            error_of(await response.get_json(), "unsupported_media_type")
        assert await state(client) == "running"
        # A body-less POST needs no content type.
        bodyless = await client.post("/gateway/pause")
        assert bodyless.status_code == 200
        assert await state(client) == "paused"
