"""Default deny: every route the app serves, HTTP and WebSocket, built-in or from an
installed plugin, answers 401 with the error envelope to a caller without credentials,
except a small declared public set. The test walks the live URL map, so a route added
later is covered without editing this file."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart import Blueprint, websocket
from quart.testing.connections import WebsocketResponseError

from host.api import hookimpl
from tests.conftest import running_app

# (method, rule) pairs served without credentials; keep in step with docs/reference/http.md.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/gateway/auth/bootstrap"),
    ("POST", "/gateway/auth/session"),
    ("GET", "/openapi.json"),
    # Authenticated by its HMAC signature instead of a bearer token (pipelines plugin).
    ("POST", "/triggers/<trigger_id>/webhook"),
    # The dashboard's pages: signed in by their own cookie (a page without it redirects
    # to /ops/login, a form without it or its CSRF token is 403; tests/test_dashboard_pages.py).
    ("GET", "/dashboard"),
    ("GET", "/webchat"),
    ("GET", "/ops"),
    ("GET", "/ops/login"),
    ("POST", "/ops/login"),
    ("POST", "/ops/logout"),
    ("GET", "/ops/diagnostics"),
    ("GET", "/ops/static/<name>"),
    ("GET", "/ops/agents"),
    ("GET", "/ops/agents/<agent_id>"),
    ("GET", "/ops/chat"),
    ("POST", "/ops/chat/new"),
    ("POST", "/ops/chat/send"),
    ("GET", "/ops/sessions"),
    ("POST", "/ops/sessions/branch"),
    ("GET", "/ops/sessions/<session_key>"),
    ("POST", "/ops/sessions/<session_key>"),
    ("GET", "/ops/memory"),
    ("POST", "/ops/memory"),
    ("GET", "/ops/memory-graph"),
    ("GET", "/ops/usage"),
    ("GET", "/ops/cortex"),
    ("GET", "/ops/tools-jobs"),
    ("POST", "/ops/tools-jobs/cancel"),
    ("GET", "/ops/channels"),
    ("POST", "/ops/channels/lifecycle"),
    ("GET", "/ops/config"),
    ("POST", "/ops/config"),
    ("GET", "/ops/training"),
    ("POST", "/ops/training/feedback"),
    ("POST", "/ops/training/config"),
    ("GET", "/ops/safety"),
    ("POST", "/ops/safety/policy"),
    ("POST", "/ops/safety/test"),
    ("GET", "/ops/deploy"),
    ("POST", "/ops/deploy"),
    ("POST", "/ops/agents/stop"),
    # Authenticated by its HMAC signature (channels plugin, webhook channel).
    ("POST", "/gateway/channels/webhook/inbound"),
}
PUBLIC_PATHS = {
    "/health",
    "/gateway/auth/bootstrap",
    "/gateway/auth/session",
    "/openapi.json",
    "/triggers/<trigger_id>/webhook",
    "/dashboard",
    "/ops",
    "/ops/agents",
    "/ops/agents/<agent_id>",
    "/ops/channels",
    "/ops/channels/lifecycle",
    "/ops/chat",
    "/ops/chat/new",
    "/ops/chat/send",
    "/ops/config",
    "/ops/deploy",
    "/ops/agents/stop",
    "/ops/diagnostics",
    "/ops/login",
    "/ops/logout",
    "/ops/memory",
    "/ops/memory-graph",
    "/ops/safety",
    "/ops/safety/policy",
    "/ops/safety/test",
    "/ops/sessions",
    "/ops/sessions/<session_key>",
    "/ops/sessions/branch",
    "/ops/static/<name>",
    "/ops/usage",
    "/ops/cortex",
    "/ops/tools-jobs",
    "/ops/tools-jobs/cancel",
    "/ops/training",
    "/ops/training/feedback",
    "/ops/training/config",
    "/webchat",
    "/gateway/channels/webhook/inbound",
}
UNLIMITED = {"per_minute": 100_000}  # the walk must see 401, not a failed-auth 429
DUMMY = {"int": "1", "float": "1.5", "path": "a/b", "uuid": "00000000-0000-0000-0000-000000000000"}


def concrete(rule: str) -> str:
    def sub(match: re.Match[str]) -> str:
        converter = (match.group(1) or "string").split("(")[0]
        return DUMMY.get(converter, "dummy")

    return re.sub(r"<(?:([^:>]+):)?[^>]+>", sub, rule)


def assert_unauthorized(status: int, headers: Any, body: Any, where: str) -> None:
    assert status == 401, where
    assert headers["WWW-Authenticate"].startswith("Bearer "), where
    assert set(body) == {"error"}, where
    assert body["error"]["code"] == "unauthorized", where
    assert body["error"]["type"] == "authentication_error", where
    assert body["error"]["message"], where


def _walk(app: Any) -> tuple[list[tuple[str, str]], list[str]]:
    http: list[tuple[str, str]] = []
    sockets: list[str] = []
    for rule in app.url_map.iter_rules():
        if getattr(rule, "websocket", False):
            sockets.append(rule.rule)
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            http.append((method, rule.rule))
    return http, sockets


async def _check_every_route(app: Any, client: Any) -> tuple[set[tuple[str, str]], list[str]]:
    http, sockets = _walk(app)
    answered_public: set[tuple[str, str]] = set()
    for method, rule in http:
        where = f"{method} {rule}"
        response = await client.open(concrete(rule), method=method, json={})
        body = await response.get_json()
        if (method, rule) in PUBLIC:
            assert response.status_code != 401, where
            assert response.status_code < 500, where
            answered_public.add((method, rule))
            continue
        assert body is not None, f"{where}: not JSON"
        assert_unauthorized(response.status_code, response.headers, body, where)
    for rule in sockets:
        with pytest.raises(WebsocketResponseError) as refused:
            async with client.websocket(concrete(rule)) as ws:
                await ws.send("{}")
                await ws.receive()
        response = refused.value.response
        assert_unauthorized(
            response.status_code, response.headers, await response.get_json(), f"WS {rule}"
        )
    return answered_public, sockets


async def test_every_route_denies_callers_without_credentials(make_settings):
    settings = make_settings(auth={"failed_auth_limit": UNLIMITED, "public_rate_limit": UNLIMITED})
    async with running_app(settings, load_entrypoints=True) as (app, client):
        http, sockets = _walk(app)
        rules = {rule for _method, rule in http}
        assert any(rule.startswith("/hello/") for rule in rules), "example plugin not loaded"
        assert "/gateway/ws" in sockets
        # The declared public set is real: each entry is served, and nothing else is public.
        assert PUBLIC <= set(http)
        assert {rule for _method, rule in PUBLIC} == PUBLIC_PATHS

        answered_public, _ = await _check_every_route(app, client)
        assert answered_public == PUBLIC


async def test_public_routes_answer_without_credentials(client):
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/gateway/auth/bootstrap")).status_code == 200
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    assert "paths" in await spec.get_json()
    # Session issuance is public: it answers for itself (here: the mode is wrong).
    issue = await client.post("/gateway/auth/session", json={"password": "x"})
    assert issue.status_code == 400
    assert (await issue.get_json())["error"]["code"] == "auth_mode_mismatch"


async def test_a_wrong_token_is_denied_on_public_and_private_routes_alike(client):
    wrong = {"Authorization": "Bearer wrong-token"}
    assert (await client.get("/gateway/config", headers=wrong)).status_code == 401
    # Public routes ignore credentials entirely: a stale token does not break the probe.
    assert (await client.get("/health", headers=wrong)).status_code == 200


class _ThirdParty:
    """A plugin that forgets to think about auth: its routes must still be denied."""

    bp = Blueprint("careless", __name__)

    @staticmethod
    @bp.route("/careless/<int:item>", methods=["GET", "PUT"])
    async def item(item: int) -> dict[str, Any]:
        return {"item": item, "leaked": True}

    @staticmethod
    @bp.websocket("/careless/ws")
    async def socket() -> None:
        await websocket.accept()
        await websocket.send("leaked")

    @hookimpl
    def gateway_register_blueprints(self, register: Any) -> None:
        register(self.bp)


async def test_an_unmarked_plugin_route_is_denied_by_default(make_settings):
    settings = make_settings(auth={"failed_auth_limit": UNLIMITED})
    plugin = ("careless", _ThirdParty())
    async with running_app(settings, extra_plugins=[plugin]) as (app, client):
        _answered, sockets = await _check_every_route(app, client)
        assert "/careless/ws" in sockets
        response = await client.get("/careless/7")
        assert b"leaked" not in await response.get_data()
        ok = await client.get(
            "/careless/7", headers={"Authorization": "Bearer test-admin-token-0123456789"}
        )
        assert ok.status_code == 200
