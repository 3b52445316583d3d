"""The three auth modes (seed 004) through HTTP: ``token``, ``password-session`` and
``localhost-dev``, plus the public bootstrap document that tells a client which is on."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from host.settings import load_settings
from host.storage import sqlite_url
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    READER,
    READER_TOKEN,
    assert_error,
    bearer,
    db_rows,
    free_port,
    running_app,
)

PASSWORD = "correct horse battery staple"
PASSWORD_ENV = "GW_TEST_GATEWAY_PASSWORD"
# The Quart test client sends no ASGI "client"; Quart then reports remote_addr "<local>",
# which the guard counts as loopback. A non-loopback caller is simulated with scope_base.
REMOTE = {"client": ("203.0.113.7", 40000)}


def session_settings(make_settings: Any, monkeypatch: pytest.MonkeyPatch, **auth: Any) -> Any:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return make_settings(
        auth={"mode": "password-session", "password": {"env": PASSWORD_ENV}, **auth}
    )


async def issue(client: Any, password: str = PASSWORD, **extra: Any) -> Any:
    return await client.post("/gateway/auth/session", json={"password": password, **extra})


async def principal_of(client: Any, headers: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    response = await client.get("/gateway/status", headers=headers, **kwargs)
    assert response.status_code == 200, await response.get_data()
    principal: dict[str, Any] = (await response.get_json())["auth"]["principal"]
    return principal


def db_dump(state_dir: Path) -> str:
    with sqlite3.connect(state_dir / "gateway.db") as conn:
        return "\n".join(conn.iterdump())


async def session_rows(url: str) -> list[tuple[Any, ...]]:
    """The stored sessions of the store at ``url``, read around the store."""
    sql = "SELECT token_hash, principal, client, revoked_ms FROM gateway_auth_sessions"
    return await db_rows(url, sql)


# -- token mode ------------------------------------------------------------------------------


async def test_right_token_passes_and_wrong_token_gets_401_with_bearer_challenge(client):
    ok = await client.get("/gateway/status", headers=ADMIN)
    assert ok.status_code == 200

    for headers in (
        {},
        bearer("not-a-configured-token"),
        bearer(ADMIN_TOKEN + "x"),
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": "Bearer "},
    ):
        denied = await client.get("/gateway/status", headers=headers)
        assert denied.status_code == 401, headers
        assert denied.headers["WWW-Authenticate"].startswith("Bearer ")
        assert 'realm="' in denied.headers["WWW-Authenticate"]
        assert denied.content_type == "application/json"
        err = assert_error(await denied.get_json(), "unauthorized")
        assert err["type"] == "authentication_error"


async def test_query_string_token_is_not_accepted_on_http_routes(client):
    # ?access_token= exists for browser WebSockets only; on HTTP it would leak into logs.
    denied = await client.get("/gateway/status", query_string={"access_token": ADMIN_TOKEN})
    assert denied.status_code == 401
    assert_error(await denied.get_json(), "unauthorized")


async def test_each_named_token_is_its_own_principal_with_its_own_gates(make_settings):
    settings = make_settings(
        auth={
            "tokens": {
                "ops": {"token": "ops-token-0123456789", "gates": ["allow_gateway_control"]},
                "cfg": {"token": "cfg-token-0123456789", "gates": ["allow_config_write"]},
            }
        }
    )
    ops, cfg = bearer("ops-token-0123456789"), bearer("cfg-token-0123456789")
    async with running_app(settings) as (_app, client):
        assert await principal_of(client, ops) == {
            "name": "ops",
            "kind": "token",
            "gates": ["allow_gateway_control"],
        }
        assert (await principal_of(client, cfg))["name"] == "cfg"
        assert (await principal_of(client, READER))["gates"] == []

        denied = await client.patch("/gateway/config", headers=ops, json={"events": {}})
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")
        denied = await client.post("/gateway/pause", headers=cfg)
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")

        paused = await client.post("/gateway/pause", headers=ops)
        assert paused.status_code == 200
        assert (await paused.get_json())["by"] == "ops"
        patched = await client.patch(
            "/gateway/config", headers=cfg, json={"events": {"page_limit_max": 500}}
        )
        assert patched.status_code == 200, await patched.get_data()


async def test_token_from_env_reference_authenticates_and_is_never_shown(
    make_settings, monkeypatch
):
    value = "env-held-token-0123456789"
    monkeypatch.setenv("GW_TEST_CI_TOKEN", value)
    settings = make_settings(auth={"tokens": {"ci": {"token": {"env": "GW_TEST_CI_TOKEN"}}}})
    async with running_app(settings) as (_app, client):
        assert (await principal_of(client, bearer(value)))["name"] == "ci"
        config = await client.get("/gateway/config", headers=ADMIN)
        text = (await config.get_data()).decode()
        body = await config.get_json()
    tokens = body["config"]["auth"]["tokens"]
    assert tokens["ci"]["token"] == {"env": "GW_TEST_CI_TOKEN"}
    assert tokens["admin"]["token"] == "**********"  # a literal is masked
    for secret in (value, ADMIN_TOKEN, READER_TOKEN):
        assert secret not in text


async def test_token_from_file_reference_authenticates(make_settings, tmp_path):
    token_file = tmp_path / "ci.token"
    token_file.write_text("file-held-token-0123456789\n")
    settings = make_settings(auth={"tokens": {"ci": {"token": {"file": str(token_file)}}}})
    async with running_app(settings) as (_app, client):
        assert (await principal_of(client, bearer("file-held-token-0123456789")))["name"] == "ci"
        # The trailing newline of the file is not part of the token, and the path is shown,
        # not the content.
        config = await client.get("/gateway/config", headers=ADMIN)
        assert "file-held-token-0123456789" not in (await config.get_data()).decode()
        assert (await config.get_json())["config"]["auth"]["tokens"]["ci"]["token"] == {
            "file": str(token_file)
        }


async def test_relative_token_file_resolves_next_to_the_config_file(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "ci.token").write_text("relative-file-token-0123456789")
    config = conf_dir / "gateway.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "state_dir": str(tmp_path / "state"),
                "auth": {"tokens": {"ci": {"token": {"file": "ci.token"}, "gates": []}}},
            }
        )
    )
    monkeypatch.chdir(tmp_path)  # not the config's folder: resolution must not use the cwd
    async with running_app(load_settings(str(config))) as (_app, client):
        assert (await principal_of(client, bearer("relative-file-token-0123456789")))[
            "name"
        ] == "ci"
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 401


# -- password-session mode ------------------------------------------------------------------


async def test_password_session_issues_a_bearer_token_that_authenticates(
    make_settings, monkeypatch, store_url
):
    settings = session_settings(make_settings, monkeypatch, session_ttl_seconds=600)
    async with running_app(settings) as (_app, client):
        response = await issue(client)
        assert response.status_code == 200
        body = await response.get_json()
        assert set(body) == {"access_token", "token_type", "expires_in_seconds", "expires_unix_ms"}
        assert body["token_type"] == "bearer"
        assert body["expires_in_seconds"] == 600
        assert isinstance(body["expires_unix_ms"], int)
        principal = await principal_of(client, bearer(body["access_token"]))
        # Without "user", the legacy auth.password logs in to the account "operator".
        assert principal["name"] == "operator"
        assert principal["kind"] == "session"
    rows = await session_rows(store_url)
    assert len(rows) == 1
    # The test client's remote address is what Quart reports without an ASGI client.
    assert rows[0][2] == "<local>"


async def test_session_tokens_are_random_and_only_their_hash_is_stored(
    make_settings, monkeypatch, state_dir
):
    # SQLite only by nature: it reads the raw bytes of the database files.
    settings = session_settings(make_settings, monkeypatch)
    async with running_app(settings) as (_app, client):
        tokens = [(await (await issue(client)).get_json())["access_token"] for _ in range(4)]
        assert len(set(tokens)) == 4
        suffixes = [t.removeprefix("gw_sess_") for t in tokens]
        assert all(len(s) >= 40 for s in suffixes)  # 32 random bytes, url-safe base64
        for a in suffixes:
            for b in suffixes:
                if a != b:  # not sequential: random tokens share no long prefix
                    assert a[:8] != b[:8], (a, b)
        dump = db_dump(state_dir)
    raw = b"".join(p.read_bytes() for p in state_dir.glob("gateway.db*"))
    for token in tokens:
        assert token not in dump
        assert token.encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest() in dump
    assert len(await session_rows(sqlite_url(state_dir))) == 4


async def test_wrong_password_is_401_invalid_credentials_and_stores_nothing(
    make_settings, monkeypatch, store_url
):
    async with running_app(session_settings(make_settings, monkeypatch)) as (_app, client):
        response = await issue(client, password="wrong password")
        assert response.status_code == 401
        err = assert_error(await response.get_json(), "invalid_credentials")
        assert err["type"] == "authentication_error"
        assert "access_token" not in (await response.get_data()).decode()
    assert await session_rows(store_url) == []


@pytest.mark.parametrize("body", [{}, {"password": ""}, {"principal": "alice"}])
async def test_missing_password_is_400_naming_the_field(
    make_settings, monkeypatch, state_dir, body
):
    async with running_app(session_settings(make_settings, monkeypatch)) as (_app, client):
        response = await client.post("/gateway/auth/session", json=body)
        assert response.status_code == 400
        err = assert_error(await response.get_json(), "invalid_request_body")
        assert "password" in err["message"]
        assert err.get("param") == "password"
    assert await session_rows(sqlite_url(state_dir)) == []


async def test_issuing_a_session_in_token_mode_is_400_auth_mode_mismatch(client, state_dir):
    response = await issue(client)
    assert response.status_code == 400
    err = assert_error(await response.get_json(), "auth_mode_mismatch")
    assert "token" in err["message"]
    assert await session_rows(sqlite_url(state_dir)) == []


async def test_session_expires_after_its_ttl(make_settings, monkeypatch):
    settings = session_settings(make_settings, monkeypatch, session_ttl_seconds=1)
    async with running_app(settings) as (_app, client):
        token = (await (await issue(client)).get_json())["access_token"]
        assert (await client.get("/gateway/status", headers=bearer(token))).status_code == 200
        await asyncio.sleep(1.2)
        expired = await client.get("/gateway/status", headers=bearer(token))
        assert expired.status_code == 401
        assert_error(await expired.get_json(), "unauthorized")
        assert expired.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_logout_revokes_only_the_callers_session(make_settings, monkeypatch, store_url):
    async with running_app(session_settings(make_settings, monkeypatch)) as (_app, client):
        mine = (await (await issue(client)).get_json())["access_token"]
        other = (await (await issue(client)).get_json())["access_token"]
        out = await client.delete("/gateway/auth/session", headers=bearer(mine))
        assert out.status_code == 200
        assert await out.get_json() == {"revoked": 1}
        gone = await client.get("/gateway/status", headers=bearer(mine))
        assert gone.status_code == 401
        assert_error(await gone.get_json(), "unauthorized")
        assert (await client.get("/gateway/status", headers=bearer(other))).status_code == 200
    revoked = {row[0]: row[3] for row in await session_rows(store_url)}
    assert revoked[hashlib.sha256(mine.encode()).hexdigest()] is not None
    assert revoked[hashlib.sha256(other.encode()).hexdigest()] is None


async def test_logout_with_a_static_token_is_400_not_a_session(client):
    response = await client.delete("/gateway/auth/session", headers=ADMIN)
    assert response.status_code == 400
    assert_error(await response.get_json(), "not_a_session")
    assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200


async def test_revoking_all_sessions_needs_the_control_gate(make_settings, monkeypatch, store_url):
    settings = session_settings(make_settings, monkeypatch, session_gates=[])
    async with running_app(settings) as (_app, client):
        tokens = [(await (await issue(client)).get_json())["access_token"] for _ in range(2)]
        for headers in (READER, bearer(tokens[0])):
            denied = await client.delete("/gateway/auth/sessions", headers=headers)
            assert denied.status_code == 403
            assert_error(await denied.get_json(), "policy_gate_denied")
        assert all(row[3] is None for row in await session_rows(store_url))
        for token in tokens:
            assert (await client.get("/gateway/status", headers=bearer(token))).status_code == 200

        done = await client.delete("/gateway/auth/sessions", headers=ADMIN)
        assert done.status_code == 200
        assert await done.get_json() == {"revoked": 2}
        for token in tokens:
            assert (await client.get("/gateway/status", headers=bearer(token))).status_code == 401
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200
    assert all(row[3] is not None for row in await session_rows(store_url))


async def test_session_survives_app_restart(make_settings, monkeypatch, store_url):
    settings = session_settings(make_settings, monkeypatch)
    async with running_app(settings) as (_app, client):
        token = (await (await issue(client)).get_json())["access_token"]
        assert (await client.get("/gateway/status", headers=bearer(token))).status_code == 200
    async with running_app(session_settings(make_settings, monkeypatch)) as (_app, client):
        principal = await principal_of(client, bearer(token))
        assert principal == {"name": "operator", "kind": "session", "gates": ["*"]}


def test_session_survives_server_process_restart(live_server, tmp_path, store_url):
    config = {
        "state_dir": str(tmp_path / "shared-state"),
        "auth": {"mode": "password-session", "password": {"env": PASSWORD_ENV}},
    }
    env = {PASSWORD_ENV: PASSWORD}
    first = live_server(config=config, env=env)
    issued = httpx.post(f"{first.url}/gateway/auth/session", json={"password": PASSWORD})
    assert issued.status_code == 200
    token = issued.json()["access_token"]
    assert httpx.get(f"{first.url}/gateway/status", headers=bearer(token)).status_code == 200
    assert first.stop() == 0

    second = live_server(config=config, env=env)
    response = httpx.get(f"{second.url}/gateway/status", headers=bearer(token))
    assert response.status_code == 200, second.log()
    assert response.json()["auth"]["principal"]["kind"] == "session"
    wrong = httpx.get(f"{second.url}/gateway/status", headers=bearer(token + "x"))
    assert wrong.status_code == 401


# -- localhost-dev mode ----------------------------------------------------------------------


async def test_localhost_dev_serves_loopback_callers_without_a_token(make_settings):
    async with running_app(make_settings(auth={"mode": "localhost-dev"})) as (_app, client):
        principal = await principal_of(client, {})
        assert principal["kind"] == "localhost-dev"
        assert principal["gates"] == ["*"]
        for addr in ("127.0.0.1", "::1"):
            loop = await principal_of(client, {}, scope_base={"client": (addr, 50000)})
            assert loop["kind"] == "localhost-dev"
        # A token that is configured still names its own principal.
        assert (await principal_of(client, READER))["name"] == "reader"


async def test_localhost_dev_refuses_callers_from_other_addresses(make_settings):
    async with running_app(make_settings(auth={"mode": "localhost-dev"})) as (_app, client):
        for headers in ({}, {"Remote-Addr": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"}):
            denied = await client.get("/gateway/status", headers=headers, scope_base=REMOTE)
            assert denied.status_code == 401, headers
            assert_error(await denied.get_json(), "unauthorized")
        # Not paused by the refused caller.
        refused = await client.post("/gateway/pause", scope_base=REMOTE)
        assert refused.status_code == 401
        status = await client.get("/gateway/status")
        assert (await status.get_json())["state"] == "running"


def test_localhost_dev_works_over_a_real_loopback_socket(live_server):
    server = live_server(config={"auth": {"mode": "localhost-dev"}})
    response = httpx.get(f"{server.url}/gateway/status")
    assert response.status_code == 200, server.log()
    assert response.json()["auth"]["principal"]["kind"] == "localhost-dev"


def test_serve_refuses_localhost_dev_on_a_public_bind(tmp_path):
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "state_dir": str(state),
                "server": {"bind": f"0.0.0.0:{port}"},
                "auth": {"mode": "localhost-dev"},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "host.cli", "serve", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "localhost-dev" in proc.stderr
    assert "listening" not in proc.stdout + proc.stderr
    assert not (state / "gateway.db").exists()  # no app was ever built


async def test_config_patch_to_localhost_dev_on_public_bind_is_refused(make_settings, state_dir):
    settings = make_settings(server={"bind": "0.0.0.0:8787"})
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config", headers=ADMIN, json={"auth": {"mode": "localhost-dev"}}
        )
        assert response.status_code == 400
        err = assert_error(await response.get_json(), "config_invalid")
        assert "localhost-dev" in err["message"]
        assert not (state_dir / "config.overrides.toml").exists()
        assert (await client.get("/gateway/status")).status_code == 401
        boot = await (await client.get("/gateway/auth/bootstrap")).get_json()
        assert boot["auth_mode"] == "token"


async def test_patch_cannot_switch_to_localhost_dev_by_also_patching_the_bind(
    make_settings, state_dir
):
    # server.bind applies only after a restart, so the running process would stay on the
    # public bind with localhost-dev live: refused, and nothing is written.
    settings = make_settings(server={"bind": "0.0.0.0:8787"})
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config",
            headers=ADMIN,
            json={"server": {"bind": "127.0.0.1:8787"}, "auth": {"mode": "localhost-dev"}},
        )
        assert response.status_code == 400
        err = assert_error(await response.get_json(), "config_invalid")
        assert "localhost-dev" in err["message"] and "0.0.0.0:8787" in err["message"]
        assert not (state_dir / "config.overrides.toml").exists()
        assert (await client.get("/gateway/status")).status_code == 401


async def test_reload_to_localhost_dev_on_public_bind_is_refused(make_settings, state_dir):
    settings = make_settings(server={"bind": "0.0.0.0:8787"})
    async with running_app(settings) as (_app, client):
        overrides = state_dir / "config.overrides.toml"
        overrides.write_text(tomli_w.dumps({"auth": {"mode": "localhost-dev"}}))
        response = await client.post("/gateway/reload", headers=ADMIN)
        assert response.status_code == 400
        err = assert_error(await response.get_json(), "config_invalid")
        assert "localhost-dev" in err["message"]
        assert (await client.get("/gateway/status")).status_code == 401
        boot = await (await client.get("/gateway/auth/bootstrap")).get_json()
        assert boot["auth_mode"] == "token"


# -- bootstrap -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "ui_mode", "requires"),
    [
        ("token", "token", True),
        ("password-session", "password-session", True),
        ("localhost-dev", "none", False),
    ],
)
async def test_bootstrap_is_public_and_describes_the_auth_mode(
    make_settings, monkeypatch, mode, ui_mode, requires
):
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    auth: dict[str, Any] = {"mode": mode}
    if mode == "password-session":
        auth["password"] = {"env": PASSWORD_ENV}
    async with running_app(make_settings(auth=auth)) as (_app, client):
        response = await client.get("/gateway/auth/bootstrap", scope_base=REMOTE)
        assert response.status_code == 200
        assert await response.get_json() == {
            "auth_mode": mode,
            "ui_auth_mode": ui_mode,
            "requires_authentication": requires,
            "ops_endpoint": "/ops",
            "ops_login_endpoint": "/ops/login",
            "auth_session_endpoint": "/gateway/auth/session",
        }
