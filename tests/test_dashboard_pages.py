"""The pages' security over HTTP: sign-in at ``/ops/login`` (gateway token, or account and
password in password-session mode), the session cookie's attributes and lifetime,
redirects without a session, CSRF on every POST form and on cookie-signed API calls
(403, nothing changed), the gates of the APIs the pages use, the Content-Security-Policy
and the static files. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from host.settings import deep_merge, load_settings
from tests.conftest import (
    ADMIN,
    READER_TOKEN,
    assert_error,
    base_config,
    db_rows,
    running_app,
    store_section,
    write_config,
)
from tests.dashboard_fixtures import dashboard_settings
from tests.dashboard_pages_helpers import login_nonce, page_csrf, sign_in

pytestmark = pytest.mark.usefixtures("store_url")

PAGES = ["/dashboard", "/webchat", "/ops", "/ops/diagnostics", "/ops/sessions", "/ops/agents/a1"]
ACCOUNT_PW = "a long enough passphrase"


def password_auth() -> dict[str, Any]:
    return {
        "mode": "password-session",
        "users": {"alice": {"password": ACCOUNT_PW, "gates": ["*"]}},
    }


async def state_of(client: Any) -> str:
    state: str = (await (await client.get("/dashboard/health", headers=ADMIN)).get_json())["state"]
    return state


async def test_pages_without_a_session_redirect_to_the_login(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["Location"] == f"/ops/login?next={path}"
        login = await client.get("/ops/login")
        assert login.status_code == 200
        assert "Gateway token" in (await login.get_data()).decode()


async def test_a_token_sign_in_sets_a_strict_http_only_cookie_that_expires(
    make_settings: Any, store_url: str
) -> None:
    settings = make_settings(plugins={"dashboard": {"login_ttl_seconds": 600}})
    async with running_app(settings) as (_, client):
        response = await sign_in(client)
        assert response.status_code == 303 and response.headers["Location"] == "/dashboard"
        (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("gw_ops=")]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Max-Age=600" in cookie and "Secure" not in cookie
        assert (await client.get("/dashboard")).status_code == 200
        assert len(await db_rows(store_url, "SELECT sid_hash FROM dashboard_logins")) == 1
        # The cookie holds no gateway token.
        assert "test-admin-token" not in cookie


async def test_the_cookie_is_secure_under_tls(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        nonce = await login_nonce(client)
        response = await client.post(
            "/ops/login",
            form={"csrf_token": nonce, "token": "test-admin-token-0123456789"},
            scheme="https",
        )
        assert response.status_code == 303
        (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("gw_ops=")]
        assert "Secure" in cookie


async def test_a_wrong_token_or_a_missing_login_nonce_signs_nobody_in(
    make_settings: Any, store_url: str
) -> None:
    async with running_app(make_settings()) as (_, client):
        wrong = await sign_in(client, token="not-a-token")
        assert wrong.status_code == 401
        assert "not a token of this gateway" in (await wrong.get_data()).decode()
        assert not [c for c in wrong.headers.getlist("Set-Cookie") if c.startswith("gw_ops=")]
        forged = await client.post(
            "/ops/login", form={"csrf_token": "guess", "token": "test-admin-token-0123456789"}
        )
        assert forged.status_code == 403
        assert_error(await forged.get_json(), "csrf_failed")
        assert await db_rows(store_url, "SELECT sid_hash FROM dashboard_logins") == []
        assert (await client.get("/dashboard")).status_code == 303


async def test_an_open_redirect_after_login_goes_to_the_dashboard(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        for target in ("//evil.example/x", "https://evil.example", "/\\evil"):
            nonce = await login_nonce(client)
            response = await client.post(
                "/ops/login",
                form={"csrf_token": nonce, "token": "test-admin-token-0123456789", "next": target},
            )
            assert response.headers["Location"] == "/dashboard", target


async def test_an_account_signs_in_and_its_cookie_ends_with_the_auth_session(
    make_settings: Any,
) -> None:
    async with running_app(make_settings(auth=password_auth())) as (_, client):
        page = (await (await client.get("/ops/login")).get_data()).decode()
        assert 'name="password"' in page
        wrong = await sign_in(client, user="alice", password="wrong passphrase")
        assert wrong.status_code == 401
        response = await sign_in(client, user="alice", password=ACCOUNT_PW)
        assert response.status_code == 303
        (cookie,) = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("gw_ops=")]
        assert "Max-Age=43200" in cookie  # auth.session_ttl_seconds
        csrf = await page_csrf(client)
        # The cookie signs in the APIs the page calls, as alice.
        status = await client.get("/gateway/status")
        assert (await status.get_json())["auth"]["principal"]["name"] == "alice"
        # Revoking every auth session signs the page out too.
        revoke = await client.delete("/gateway/auth/sessions", headers={"X-CSRF-Token": csrf})
        assert revoke.status_code == 200
        assert (await client.get("/dashboard")).status_code == 303
        assert (await client.get("/dashboard/health")).status_code == 401


async def test_accounts_sign_in_only_in_password_session_mode(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        response = await sign_in(client, user="alice", password=ACCOUNT_PW)
        assert response.status_code == 400
        assert "password-session" in (await response.get_data()).decode()


async def test_a_post_form_without_session_or_csrf_token_changes_nothing(
    make_settings: Any, store_url: str
) -> None:
    async with running_app(make_settings()) as (_, client):
        anonymous = await client.post("/ops/logout", form={"csrf_token": "x"})
        assert anonymous.status_code == 403
        assert_error(await anonymous.get_json(), "login_required")
        await sign_in(client)
        csrf = await page_csrf(client)
        # One character off (never the same character: the token may end in "0").
        off = csrf[:-1] + ("1" if csrf.endswith("0") else "0")
        for form in ({}, {"csrf_token": "wrong"}, {"csrf_token": off}):
            refused = await client.post("/ops/logout", form=form)
            assert refused.status_code == 403
            assert_error(await refused.get_json(), "csrf_failed")
        # Still signed in: the forms above changed nothing.
        assert (await client.get("/dashboard")).status_code == 200
        assert len(await db_rows(store_url, "SELECT sid_hash FROM dashboard_logins")) == 1
        out = await client.post("/ops/logout", form={"csrf_token": csrf})
        assert out.status_code == 303
        assert (await client.get("/dashboard")).status_code == 303
        assert await db_rows(store_url, "SELECT sid_hash FROM dashboard_logins") == []


async def test_a_cookie_signed_api_call_needs_the_csrf_header(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        await sign_in(client)
        csrf = await page_csrf(client)
        refused = await client.post("/dashboard/actions", json={"action": "pause"})
        assert refused.status_code == 403
        assert_error(await refused.get_json(), "csrf_failed")
        assert await state_of(client) == "running"
        other = await sign_in_elsewhere(make_settings)
        wrong = await client.post(
            "/dashboard/actions", json={"action": "pause"}, headers={"X-CSRF-Token": other}
        )
        assert wrong.status_code == 403
        assert await state_of(client) == "running"
        done = await client.post(
            "/dashboard/actions", json={"action": "pause"}, headers={"X-CSRF-Token": csrf}
        )
        assert done.status_code == 200 and await state_of(client) == "paused"


async def sign_in_elsewhere(make_settings: Any) -> str:
    """The CSRF token of another session (of another gateway on the same settings)."""
    async with running_app(make_settings()) as (_, other):
        await sign_in(other)
        return await page_csrf(other)


async def test_forms_and_calls_keep_the_gates_of_the_signed_in_principal(
    make_settings: Any, tmp_path: Path
) -> None:
    async with running_app(dashboard_settings(make_settings, tmp_path)) as (_, client):
        await sign_in(client, token=READER_TOKEN)
        csrf = await page_csrf(client)
        headers = {"X-CSRF-Token": csrf}
        refused = await client.post("/dashboard/actions", json={"action": "pause"}, headers=headers)
        assert refused.status_code == 403
        assert_error(await refused.get_json(), "policy_gate_denied")
        assert await state_of(client) == "running"
        status = await (await client.get("/gateway/status")).get_json()
        assert status["auth"]["principal"]["name"] == "reader"


async def test_pages_carry_a_strict_csp_and_no_inline_script(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        login = await client.get("/ops/login")
        assert "script-src 'self'" in login.headers["Content-Security-Policy"]
        await sign_in(client)
        for path in ("/dashboard", "/webchat", "/ops", "/ops/diagnostics"):
            response = await client.get(path)
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Cache-Control"] == "no-store"
            html = (await response.get_data()).decode()
            scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
            assert scripts or path.startswith("/ops"), path
            for attrs, body in scripts:
                assert 'src="/ops/static/' in attrs and not body.strip(), path
            assert "http://" not in html and "https://" not in html  # no CDN


async def test_static_files_are_served_and_nothing_else(make_settings: Any) -> None:
    async with running_app(make_settings()) as (_, client):
        script = await client.get("/ops/static/dashboard.js")
        assert script.status_code == 200
        assert script.headers["Content-Type"].startswith("text/javascript")
        for name in ("nope.js", "..%2f__init__.py", "__init__.py"):
            missing = await client.get(f"/ops/static/{name}")
            assert missing.status_code == 404, name


async def test_an_ops_section_whose_plugin_is_off_says_it_is_disabled(make_settings: Any) -> None:
    settings = make_settings(plugins={"training": {"enabled": False}})
    async with running_app(settings) as (_, client):
        assert (await client.get("/ops/training")).status_code == 303
        await sign_in(client)
        page = await client.get("/ops/training")
        assert page.status_code == 503
        assert (
            "This feature is disabled: the training plugin is off"
            in (await page.get_data()).decode()
        )


async def test_a_token_removed_from_the_config_signs_its_cookie_session_out(
    store_url: str, state_dir: Path, tmp_path: Path
) -> None:
    data = deep_merge(base_config(state_dir), store_section(store_url))
    config_file = write_config(tmp_path / "conf" / "gateway.toml", data)
    async with running_app(load_settings(config_file)) as (_, client):
        await sign_in(client, token=READER_TOKEN)
        assert (await client.get("/ops")).status_code == 200
        assert (await client.get("/gateway/status")).status_code == 200
        del data["auth"]["tokens"]["reader"]
        write_config(config_file, data)
        reloaded = await client.post("/gateway/reload", headers=ADMIN)
        assert reloaded.status_code == 200, await reloaded.get_json()
        page = await client.get("/ops")
        assert page.status_code == 303 and page.headers["Location"].startswith("/ops/login")
        assert (await client.get("/gateway/status")).status_code == 401
        # Nothing else was signed out.
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200
