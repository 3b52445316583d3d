"""Settings: where gateway.toml is found, what overrides it, secret references, and the
runtime write-back (PATCH /gateway/config) and reload that never write a secret in clear
and never replace a working configuration with a broken one."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from host.app import create_app
from host.settings import load_settings
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    READER,
    READER_TOKEN,
    base_config,
    running_app,
    write_config,
)
from tests.conftest import gateway_cli as gateway

REPO = Path(__file__).resolve().parents[1]
CONFIG_DOC = REPO / "docs" / "reference" / "configuration.md"


def assert_error(body: dict[str, Any], code: str) -> dict[str, Any]:
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert {"type", "code", "message"} <= set(error)
    assert error["code"] == code, error
    return error


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A gateway.toml with the test tokens, its state beside it."""
    return write_config(tmp_path / "conf" / "gateway.toml", base_config(tmp_path / "state"))


# -- finding the file, and what overrides it ---------------------------------------------------


@pytest.mark.parametrize("how", ["--config", "GATEWAY_CONFIG", "working directory"])
def test_config_file_is_found_by_option_then_env_then_working_dir(tmp_path, how):
    for name, beat in (("option", 1.0), ("env", 2.0), ("cwd", 3.0)):
        write_config(tmp_path / name / "gateway.toml", {"events": {"heartbeat_seconds": beat}})
    args, env, cwd, expected = ["config", "show"], {}, tmp_path / "cwd", 3.0
    if how in ("--config", "GATEWAY_CONFIG"):
        env = {"GATEWAY_CONFIG": str(tmp_path / "env" / "gateway.toml")}
        expected = 2.0
    if how == "--config":
        args += ["--config", str(tmp_path / "option" / "gateway.toml")]
        expected = 1.0
    result = gateway(*args, cwd=cwd, **env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["config"]["events"]["heartbeat_seconds"] == expected
    found = {1.0: "option", 2.0: "env", 3.0: "cwd"}[expected]
    assert Path(shown["sources"]["config_file"]) == tmp_path / found / "gateway.toml"
    # state_dir is relative to the config file, not to the working directory
    assert Path(shown["config"]["state_dir"]) == tmp_path / found / ".gateway"


def test_missing_config_file_is_a_readable_error(tmp_path):
    result = gateway("config", "check", "--config", "nope.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert "config file not found: nope.toml" in result.stderr
    missing_env = gateway("config", "show", cwd=tmp_path, GATEWAY_CONFIG="gone.toml")
    assert missing_env.returncode == 1
    assert "GATEWAY_CONFIG names a missing file: gone.toml" in missing_env.stderr


def test_env_overrides_with_nested_keys_beat_the_file(tmp_path, config_file):
    data = tomllib.loads(config_file.read_text())
    data["events"] = {"heartbeat_seconds": 7, "poll_seconds": 2}
    data["server"] = {"bind": "127.0.0.1:8000"}
    write_config(config_file, data)
    result = gateway(
        "config",
        "show",
        "--config",
        str(config_file),
        cwd=tmp_path,
        GATEWAY_EVENTS__HEARTBEAT_SECONDS="3",
        GATEWAY_SERVER__BIND="127.0.0.1:9999",
        GATEWAY_AUTH__TOKENS__CI__TOKEN="ci-token-from-env-0123456789",
        GATEWAY_LOAD_PLUGINS="hello, other",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["config"]["events"] == {
        "heartbeat_seconds": 3.0,
        "poll_seconds": 2.0,  # the rest of the file's section stays
        "page_limit_max": 1000,
        "max_streams_per_principal": 32,
        "subscriber_queue_max": 1000,
    }
    assert shown["config"]["server"]["bind"] == "127.0.0.1:9999"
    assert sorted(shown["config"]["auth"]["tokens"]) == ["admin", "ci", "reader"]
    assert shown["config"]["load_plugins"] == ["hello", "other"]
    assert "ci-token-from-env-0123456789" not in result.stdout
    assert "GATEWAY_EVENTS__HEARTBEAT_SECONDS" in shown["sources"]["env_keys"]


def test_invalid_env_override_is_a_readable_error(tmp_path, config_file):
    result = gateway(
        "config", "check", "--config", str(config_file), cwd=tmp_path, GATEWAY_SERVER__BIND="nope"
    )
    assert result.returncode == 1
    assert "server.bind" in result.stderr
    assert "HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


# -- secrets ---------------------------------------------------------------------------------


def _secret_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "conf").mkdir(exist_ok=True)
    (tmp_path / "conf" / "ops.secret").write_text("file-token-0123456789\n")
    data = base_config(tmp_path / "state")
    data["auth"]["tokens"]["ci"] = {"token": {"env": "TEST_CI_TOKEN"}}
    data["auth"]["tokens"]["ops"] = {"token": {"file": "ops.secret"}}  # beside the file
    path = write_config(tmp_path / "conf" / "gateway.toml", data)
    return path, {"TEST_CI_TOKEN": "env-token-0123456789"}


async def test_secret_references_resolve_and_are_never_shown(tmp_path, monkeypatch):
    path, env = _secret_config(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(path)
    async with running_app(settings) as (_app, client):
        for token, name in (
            ("env-token-0123456789", "ci"),
            ("file-token-0123456789", "ops"),
            (READER_TOKEN, "reader"),
        ):
            status = await client.get(
                "/gateway/status", headers={"Authorization": f"Bearer {token}"}
            )
            assert status.status_code == 200
            assert (await status.get_json())["auth"]["principal"]["name"] == name
        response = await client.get("/gateway/config", headers=ADMIN)
        assert response.status_code == 200
        text = await response.get_data(as_text=True)
    for secret in ("env-token-0123456789", "file-token-0123456789", ADMIN_TOKEN, READER_TOKEN):
        assert secret not in text
    tokens = json.loads(text)["config"]["auth"]["tokens"]
    assert tokens["ci"]["token"] == {"env": "TEST_CI_TOKEN"}
    assert tokens["ops"]["token"] == {"file": "ops.secret"}
    assert tokens["admin"]["token"] == "**********"


def test_config_show_and_check_never_print_a_secret(tmp_path):
    path, env = _secret_config(tmp_path)
    shown = gateway("config", "show", "--config", str(path), cwd=tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    checked = gateway("config", "check", "--config", str(path), cwd=tmp_path, **env)
    assert checked.returncode == 0, checked.stderr
    for out in (shown.stdout, shown.stderr, checked.stdout, checked.stderr):
        for secret in ("env-token-0123456789", "file-token-0123456789", ADMIN_TOKEN):
            assert secret not in out
    tokens = json.loads(shown.stdout)["config"]["auth"]["tokens"]
    assert tokens["ci"]["token"] == {"env": "TEST_CI_TOKEN"}
    # The literal tokens in the file are allowed, with a warning each.
    assert "warning: auth.tokens.admin.token is a literal" in checked.stderr
    assert "warning: auth.tokens.reader.token is a literal" in checked.stderr
    assert "auth.tokens.ci.token" not in checked.stderr
    assert checked.stdout.startswith("ok: ")


def test_unresolvable_secret_reference_fails_check_naming_it(tmp_path):
    path, _env = _secret_config(tmp_path)
    result = gateway("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "auth.tokens.ci.token" in result.stderr
    assert "TEST_CI_TOKEN is not set" in result.stderr
    (tmp_path / "conf" / "ops.secret").unlink()
    no_file = gateway("config", "check", "--config", str(path), cwd=tmp_path, TEST_CI_TOKEN="x")
    assert no_file.returncode == 1
    assert "cannot read secret file ops.secret" in no_file.stderr


def test_serve_warns_about_literal_tokens_and_hides_them_over_http(live_server):
    server = live_server(
        config={"auth": {"tokens": {"ci": {"token": {"env": "TEST_CI_TOKEN"}}}}},
        env={"TEST_CI_TOKEN": "env-token-0123456789"},
    )
    response = httpx.get(f"{server.url}/gateway/config", headers=server.headers, timeout=10)
    assert response.status_code == 200
    for secret in (ADMIN_TOKEN, READER_TOKEN, "env-token-0123456789"):
        assert secret not in response.text
    server.stop()
    log = server.log()
    assert "warning: auth.tokens.admin.token is a literal" in log
    assert "auth.tokens.ci.token is a literal" not in log
    assert ADMIN_TOKEN not in log


def test_config_show_masks_a_database_password_and_plugin_secrets(tmp_path):
    data = {
        "storage": {"url": "postgresql+asyncpg://gw:pg-password-0123@db.internal:5432/gw"},
        "plugins": {
            "weather": {
                "city": "Lisbon",
                "api_key": "weather-literal-0123",
                "upstream": {"client_secret": "nested-literal-0123", "timeout": 5},
                "token": {"env": "WEATHER_TOKEN"},
            }
        },
    }
    write_config(tmp_path / "gateway.toml", data)
    result = gateway("config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for secret in ("pg-password-0123", "weather-literal-0123", "nested-literal-0123"):
        assert secret not in result.stdout
    shown = json.loads(result.stdout)["config"]
    assert shown["storage"]["url"] == "postgresql+asyncpg://gw:***@db.internal:5432/gw"
    assert shown["plugins"]["weather"] == {
        "enabled": True,
        "city": "Lisbon",
        "api_key": "**********",
        "upstream": {"client_secret": "**********", "timeout": 5},
        "token": {"env": "WEATHER_TOKEN"},
    }


async def test_password_secret_is_masked_in_config(make_settings):
    settings = make_settings(auth={"mode": "password-session", "password": "hunter2-is-long"})
    async with running_app(settings) as (_app, client):
        text = await (await client.get("/gateway/config", headers=ADMIN)).get_data(as_text=True)
    assert "hunter2-is-long" not in text
    assert json.loads(text)["config"]["auth"]["password"] == "**********"


# -- PATCH /gateway/config ---------------------------------------------------------------------


def _overrides(settings: Any) -> Path:
    return Path(settings.state_dir) / "config.overrides.toml"


def _temp_files(state_dir: Path) -> list[str]:
    return [p.name for p in state_dir.iterdir() if p.name.startswith(".config.overrides")]


async def test_patch_config_applies_live_keys_and_reports_restart_keys(make_settings):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config",
            json={
                "events": {"heartbeat_seconds": 5},
                "server": {"bind": "127.0.0.1:9999"},
                "auth": {"admin_token_file": "another-token-file"},
            },
            headers=ADMIN,
        )
        assert response.status_code == 200
        report = await response.get_json()
        assert report["status"] == "applied"
        assert report["applied_live"] == ["events.heartbeat_seconds"]
        assert report["restart_required"] == ["auth.admin_token_file", "server.bind"]
        assert Path(report["overrides_file"]) == _overrides(settings)
        running = (await (await client.get("/gateway/config", headers=ADMIN)).get_json())["config"]
        assert running["events"]["heartbeat_seconds"] == 5.0
        assert running["server"]["bind"] == "127.0.0.1:8787"  # until a restart
        assert running["auth"]["admin_token_file"] == "admin-token"
    written = tomllib.loads(_overrides(settings).read_text())
    assert written == {
        "events": {"heartbeat_seconds": 5},
        "server": {"bind": "127.0.0.1:9999"},
        "auth": {"admin_token_file": "another-token-file"},
    }
    assert _temp_files(settings.state_dir) == []


async def test_patch_config_needs_the_config_write_gate(make_settings):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": 5}}, headers=READER
        )
        assert response.status_code == 403
        assert_error(await response.get_json(), "policy_gate_denied")
    assert not _overrides(settings).exists()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"events": {"heartbeat_seconds": "fast"}}, "events.heartbeat_seconds"),
        ({"events": {"heartbeat_seconds": -1}}, "events.heartbeat_seconds"),
        ({"server": {"bind": "no-port"}}, "server.bind"),
        ({"auth": {"mode": "open-door"}}, "auth.mode"),
        ({"events": {"heartbeet_seconds": 3}}, "events.heartbeet_seconds"),
        ({"auth": {"mode": "password-session"}}, "auth.password"),
    ],
)
async def test_patch_config_refuses_invalid_values_naming_the_field(make_settings, patch, field):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        before = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        response = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        assert field in error["message"]
        after = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert after == before
    assert not _overrides(settings).exists()
    assert _temp_files(settings.state_dir) == []


async def test_patch_config_leaves_existing_overrides_untouched_on_error(make_settings):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        ok = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": 5}}, headers=ADMIN
        )
        assert ok.status_code == 200
        before = _overrides(settings).read_bytes()
        bad = await client.patch(
            "/gateway/config",
            json={"events": {"heartbeat_seconds": 6, "poll_seconds": "often"}},
            headers=ADMIN,
        )
        assert bad.status_code == 400
        assert (
            "events.poll_seconds" in assert_error(await bad.get_json(), "config_invalid")["message"]
        )
        running = (await (await client.get("/gateway/config", headers=ADMIN)).get_json())["config"]
        assert running["events"]["heartbeat_seconds"] == 5.0
    assert _overrides(settings).read_bytes() == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"{}", "application/json", 400, "empty_patch"),
        (b"events.heartbeat_seconds=3", "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_patch_config_refuses_malformed_bodies(
    make_settings, body, content_type, status, code
):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config", data=body, headers={**ADMIN, "Content-Type": content_type}
        )
        assert response.status_code == status
        assert_error(await response.get_json(), code)
    assert not _overrides(settings).exists()


async def test_patch_config_refuses_a_literal_secret(make_settings):
    settings = make_settings()
    leaked = "sk-literal-secret-0123456789"
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config",
            json={"auth": {"tokens": {"ci": {"token": leaked, "gates": []}}}},
            headers=ADMIN,
        )
        assert response.status_code == 400
        text = await response.get_data(as_text=True)
        error = assert_error(json.loads(text), "secret_literal_refused")
        assert "auth.tokens.ci.token" in error["message"]
        assert leaked not in text
        denied = await client.get("/gateway/status", headers={"Authorization": f"Bearer {leaked}"})
        assert denied.status_code == 401
        password = await client.patch(
            "/gateway/config",
            json={"auth": {"mode": "password-session", "password": leaked}},
            headers=ADMIN,
        )
        assert password.status_code == 400
        assert_error(await password.get_json(), "secret_literal_refused")
    assert not _overrides(settings).exists()
    assert not any(
        leaked in p.read_text(errors="ignore") for p in settings.state_dir.glob("*.toml")
    )


async def test_patch_config_accepts_an_env_reference_and_writes_only_the_reference(
    make_settings, monkeypatch
):
    monkeypatch.setenv("TEST_PATCHED_TOKEN", "patched-token-0123456789")
    settings = make_settings(secrets={"allowed_env": ["TEST_PATCHED_*"]})
    new = {"Authorization": "Bearer patched-token-0123456789"}
    async with running_app(settings) as (_app, client):
        assert (await client.get("/gateway/status", headers=new)).status_code == 401
        response = await client.patch(
            "/gateway/config",
            json={"auth": {"tokens": {"ci": {"token": {"env": "TEST_PATCHED_TOKEN"}}}}},
            headers=ADMIN,
        )
        assert response.status_code == 200
        text = await response.get_data(as_text=True)
        assert "patched-token-0123456789" not in text
        report = json.loads(text)
        assert "auth.tokens.ci.token" in report["applied_live"]
        status = await client.get("/gateway/status", headers=new)
        assert status.status_code == 200  # auth changes apply live
        assert (await status.get_json())["auth"]["principal"]["name"] == "ci"
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_data(as_text=True)
        assert "patched-token-0123456789" not in shown
    raw = _overrides(settings).read_text()
    assert "patched-token-0123456789" not in raw
    assert tomllib.loads(raw) == {
        "auth": {"tokens": {"ci": {"token": {"env": "TEST_PATCHED_TOKEN"}}}}
    }


async def test_patch_config_refuses_a_reference_to_an_unset_variable(make_settings):
    settings = make_settings(secrets={"allowed_env": ["TEST_NEVER_SET_TOKEN"]})
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config",
            json={"auth": {"tokens": {"ci": {"token": {"env": "TEST_NEVER_SET_TOKEN"}}}}},
            headers=ADMIN,
        )
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        assert "TEST_NEVER_SET_TOKEN" in error["message"]
    assert not _overrides(settings).exists()


async def test_patch_config_null_removes_a_key(make_settings):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        for value in (5, 6):
            response = await client.patch(
                "/gateway/config",
                json={"events": {"heartbeat_seconds": value, "poll_seconds": 0.5}},
                headers=ADMIN,
            )
            assert response.status_code == 200
        removed = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": None}}, headers=ADMIN
        )
        assert removed.status_code == 200
        assert (await removed.get_json())["applied_live"] == ["events.heartbeat_seconds"]
        running = (await (await client.get("/gateway/config", headers=ADMIN)).get_json())["config"]
        assert running["events"]["heartbeat_seconds"] == 15.0  # back to the default
        assert running["events"]["poll_seconds"] == 0.5
        assert tomllib.loads(_overrides(settings).read_text()) == {"events": {"poll_seconds": 0.5}}
        emptied = await client.patch(
            "/gateway/config", json={"events": {"poll_seconds": None}}, headers=ADMIN
        )
        assert emptied.status_code == 200
    assert tomllib.loads(_overrides(settings).read_text()) == {}
    assert _temp_files(settings.state_dir) == []


async def test_patch_config_refuses_to_remove_a_key_the_config_file_sets(config_file):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        refused = await client.patch(
            "/gateway/config", json={"auth": {"tokens": {"reader": None}}}, headers=ADMIN
        )
        assert refused.status_code == 409
        error = assert_error(await refused.get_json(), "config_key_in_file")
        assert "auth.tokens.reader" in error["message"]
        # The token still signs in: nothing was taken out, nothing was written.
        assert (await client.get("/gateway/status", headers=READER)).status_code == 200
    assert not settings.overrides_path.exists()


async def test_patch_config_refuses_to_move_the_state_dir(make_settings, tmp_path):
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config", json={"state_dir": str(tmp_path / "elsewhere")}, headers=ADMIN
        )
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        assert "state_dir" in error["message"]
    assert not _overrides(settings).exists()


async def test_patched_config_survives_reload_and_restart(config_file):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config",
            json={"events": {"heartbeat_seconds": 4}, "server": {"max_body_bytes": 4096}},
            headers=ADMIN,
        )
        assert response.status_code == 200
        reloaded = await client.post("/gateway/reload", headers=ADMIN)
        assert reloaded.status_code == 200
        report = await reloaded.get_json()
        assert report["status"] == "reloaded"
        assert report["applied_live"] == []
        assert report["restart_required"] == ["server.max_body_bytes"]  # still pending
        running = (await (await client.get("/gateway/config", headers=ADMIN)).get_json())["config"]
        assert running["events"]["heartbeat_seconds"] == 4.0
    restarted = load_settings(config_file)
    async with running_app(restarted) as (app, client):
        running = (await (await client.get("/gateway/config", headers=ADMIN)).get_json())["config"]
        assert running["events"]["heartbeat_seconds"] == 4.0
        assert running["server"]["max_body_bytes"] == 4096
        assert app.config["MAX_CONTENT_LENGTH"] == 4096
    # The config file itself is never rewritten.
    assert tomllib.loads(config_file.read_text()) == base_config(
        config_file.parent.parent / "state"
    )


async def test_patched_config_survives_restart_with_a_state_dir_flag(config_file, tmp_path):
    other = tmp_path / "other-state"
    settings = load_settings(config_file, state_dir=str(other))
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": 4}}, headers=ADMIN
        )
        assert response.status_code == 200
        assert Path((await response.get_json())["overrides_file"]).parent == other
    restarted = load_settings(config_file, state_dir=str(other))
    assert restarted.events.heartbeat_seconds == 4.0


async def test_env_override_shadows_a_patch(make_settings, monkeypatch):
    monkeypatch.setenv("GATEWAY_EVENTS__HEARTBEAT_SECONDS", "2")
    settings = make_settings()
    async with running_app(settings) as (_app, client):
        response = await client.patch(
            "/gateway/config", json={"events": {"heartbeat_seconds": 9}}, headers=ADMIN
        )
        assert response.status_code == 200
        report = await response.get_json()
        assert report["env_shadowed"] == ["events.heartbeat_seconds"]
        running = (await (await client.get("/gateway/config", headers=ADMIN)).get_json())["config"]
        assert running["events"]["heartbeat_seconds"] == 2.0


# -- POST /gateway/reload ----------------------------------------------------------------------


async def test_reload_applies_a_changed_config_file(config_file):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        data = tomllib.loads(config_file.read_text())
        data["auth"]["tokens"]["reader"]["token"] = "rotated-reader-token-0123456789"
        write_config(config_file, data)
        response = await client.post("/gateway/reload", headers=ADMIN)
        assert response.status_code == 200
        assert (await response.get_json())["applied_live"] == ["auth.tokens.reader.token"]
        assert (await client.get("/gateway/status", headers=READER)).status_code == 401
        rotated = {"Authorization": "Bearer rotated-reader-token-0123456789"}
        assert (await client.get("/gateway/status", headers=rotated)).status_code == 200


@pytest.mark.parametrize(
    ("broken", "mentions"),
    [
        ("this is [not toml", "invalid TOML"),
        ('[events]\nheartbeat_seconds = "soon"\n', "events.heartbeat_seconds"),
        ('[auth]\nmode = "localhost-dev"\n[server]\nbind = "0.0.0.0:8787"\n', "loopback"),
    ],
)
async def test_broken_reload_is_refused_and_the_old_config_keeps_running(
    config_file, broken, mentions
):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        before = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        config_file.write_text(broken)
        response = await client.post("/gateway/reload", headers=ADMIN)
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        assert mentions in error["message"]
        # The old tokens still work and nothing changed.
        assert (await client.get("/gateway/status", headers=READER)).status_code == 200
        after = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert after == before
        paused = await client.post("/gateway/pause", headers=ADMIN)
        assert paused.status_code == 200


async def test_app_built_from_a_config_file_reports_its_sources(config_file):
    app = create_app(load_settings(config_file), load_entrypoints=False)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        body = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
    assert Path(body["sources"]["config_file"]) == config_file
    assert body["sources"]["overrides_present"] is False
    assert Path(body["config"]["state_dir"]) == config_file.parent.parent / "state"


# -- the reference page ------------------------------------------------------------------------


def _keys(model: Any, prefix: str = "") -> list[str]:
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        out.append(key)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _keys(annotation, f"{key}.")
    return out


def test_every_setting_is_documented():
    from host.settings import Settings, TokenSettings, UserSettings

    text = CONFIG_DOC.read_text()
    keys = (
        _keys(Settings)
        + _keys(TokenSettings, "auth.tokens.<name>.")
        + _keys(UserSettings, "auth.users.<name>.")
    )
    # A key is documented in a table row (`events.poll_seconds`), a section by its
    # heading (`[events]`).
    missing = [key for key in keys if f"`{key}`" not in text and f"`[{key}]`" not in text]
    assert missing == [], f"docs/reference/configuration.md lacks {missing}"
