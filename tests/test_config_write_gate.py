"""``allow_config_write`` alone changes only ``events.*``: every key that grants gates,
points a model (and its key) elsewhere, loads code or reads files and environment
variables needs the admin's ``"*"`` as well (403, nothing written). Literal secrets in
free-form sections are refused, and a ``{file}`` error says nothing about paths outside
the config folder."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, running_app
from tests.openai_helpers import USER

CFG_TOKEN = "cfg-only-token-0123456789"
CFG = {"Authorization": f"Bearer {CFG_TOKEN}"}
EXFIL_ENV = "TEST_CONFIG_GATE_EXFIL"


@pytest.fixture
def cfg_settings(make_settings: Any, tmp_path: Path) -> Any:
    # The admin may name these references in a PATCH; nothing else.
    return make_settings(
        auth={"tokens": {"cfg": {"token": CFG_TOKEN, "gates": ["allow_config_write"]}}},
        secrets={"allowed_env": [EXFIL_ENV], "allowed_files_dir": str(tmp_path)},
    )


def exfil_model(url: str, api_key: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": f"{url}/v1",
        "upstream_model": "normal",
        "api_key": api_key,
    }


def escalations(tmp_path: Path, url: str) -> dict[str, tuple[dict[str, Any], str]]:
    """Each patch a config writer must not make alone, and a key its 403 names."""
    secret_file = tmp_path / "elsewhere.secret"
    secret_file.write_text("file-secret-0123456789")
    return {
        "model-env": (
            {"models": {"exfil": exfil_model(url, {"env": EXFIL_ENV})}},
            "models.exfil.api_key",
        ),
        "model-file": (
            {"models": {"exfil": exfil_model(url, {"file": str(secret_file)})}},
            "models.exfil.api_key",
        ),
        "own-gates": ({"auth": {"tokens": {"cfg": {"gates": ["*"]}}}}, "auth.tokens.cfg.gates"),
        "drop-token": ({"auth": {"tokens": {"admin": None}}}, "auth.tokens.admin"),
        "pipelines-dir": (
            {"plugins": {"pipelines": {"directory": str(tmp_path)}}},
            "plugins.pipelines.directory",
        ),
        "admin-token-file": (
            {"auth": {"admin_token_file": "/tmp/stolen-admin-token"}},
            "auth.admin_token_file",
        ),
        "storage-url": ({"storage": {"url": "sqlite:////tmp/x.db"}}, "storage.url"),
        "server-bind": ({"server": {"bind": "0.0.0.0:8787"}}, "server.bind"),
        "load-plugins": ({"load_plugins": ["evil"]}, "load_plugins"),
        "state-dir": ({"state_dir": str(tmp_path)}, "state_dir"),
        "other-table": ({"weather": {"city": "Oslo"}}, "weather.city"),
        "reference-in-events": (
            {"events": {"page_limit_max": 5, "heartbeat_seconds": {"env": EXFIL_ENV}}},
            "events.heartbeat_seconds",
        ),
        "mixed": ({"events": {"page_limit_max": 5}, "auth": {"mode": "token"}}, "auth.mode"),
    }


async def shown_config(client: Any) -> dict[str, Any]:
    response = await client.get("/gateway/config", headers=ADMIN)
    assert response.status_code == 200
    body: dict[str, Any] = await response.get_json()
    return body


async def test_config_writer_alone_cannot_escalate_and_nothing_is_written(
    cfg_settings, fake_upstream, tmp_path, monkeypatch
):
    monkeypatch.setenv(EXFIL_ENV, "env-secret-0123456789")
    async with running_app(cfg_settings) as (_app, client):
        before = await shown_config(client)
        for name, (patch, key) in escalations(tmp_path, fake_upstream.url).items():
            denied = await client.patch("/gateway/config", headers=CFG, json=patch)
            assert denied.status_code == 403, (name, await denied.get_data())
            error = (await denied.get_json())["error"]
            assert error["code"] == "policy_gate_denied", name
            assert key in error["message"] and "'*'" in error["message"], (name, error)
            after = await shown_config(client)
            assert after["sources"]["overrides_present"] is False, name
            assert after == before, name
        # The live consequences did not happen either: no model to exfiltrate through,
        # no new gate for the writer.
        chat = await client.post(
            "/v1/chat/completions", headers=ADMIN, json={"model": "exfil", "messages": USER}
        )
        assert chat.status_code == 404
        assert fake_upstream.requests == []
        paused = await client.post("/gateway/pause", headers=CFG)
        assert paused.status_code == 403
        assert (await client.get("/gateway/status", headers=ADMIN)).status_code == 200
    assert not cfg_settings.overrides_path.exists()


async def test_config_writer_alone_can_still_change_events(cfg_settings):
    async with running_app(cfg_settings) as (_app, client):
        patch = {"events": {"page_limit_max": 77, "heartbeat_seconds": None}}
        patched = await client.patch("/gateway/config", headers=CFG, json=patch)
        assert patched.status_code == 200, await patched.get_data()
        assert (await patched.get_json())["applied_live"] == ["events.page_limit_max"]
        shown = await shown_config(client)
        assert shown["config"]["events"]["page_limit_max"] == 77
        assert shown["sources"]["overrides_present"] is True
    written = tomllib.loads(cfg_settings.overrides_path.read_text())
    assert written == {"events": {"page_limit_max": 77}}


async def test_admin_can_still_make_every_sensitive_change(
    cfg_settings, fake_upstream, tmp_path, monkeypatch
):
    monkeypatch.setenv(EXFIL_ENV, fake_upstream.api_key)
    async with running_app(cfg_settings) as (_app, client):
        model = {"models": {"exfil": exfil_model(fake_upstream.url, {"env": EXFIL_ENV})}}
        patched = await client.patch("/gateway/config", headers=ADMIN, json=model)
        assert patched.status_code == 200, await patched.get_data()
        chat = await client.post(
            "/v1/chat/completions", headers=ADMIN, json={"model": "exfil", "messages": USER}
        )
        assert chat.status_code == 200, await chat.get_data()
        sent = fake_upstream.requests[-1].headers["Authorization"]
        assert sent == f"Bearer {fake_upstream.api_key}"

        gates = {"auth": {"tokens": {"cfg": {"gates": ["*"]}}}}
        assert (await client.patch("/gateway/config", headers=ADMIN, json=gates)).status_code == 200
        assert (await client.post("/gateway/pause", headers=CFG)).status_code == 200

        restart = {
            "plugins": {"pipelines": {"directory": str(tmp_path)}},
            "auth": {"admin_token_file": "other-admin-token"},
            "storage": {"busy_timeout_ms": 2000},
        }
        patched = await client.patch("/gateway/config", headers=ADMIN, json=restart)
        assert patched.status_code == 200, await patched.get_data()
        assert set((await patched.get_json())["restart_required"]) >= {
            "plugins.pipelines.directory",
            "auth.admin_token_file",
            "storage.busy_timeout_ms",
        }
    written = tomllib.loads(cfg_settings.overrides_path.read_text())
    assert written["models"]["exfil"]["api_key"] == {"env": EXFIL_ENV}
    assert written["auth"]["tokens"]["cfg"]["gates"] == ["*"]


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        (
            {"plugins": {"pipelines": {"webhooks": {"gh": {"pipeline": "p", "secret": "CLEAR"}}}}},
            "plugins.pipelines.webhooks.gh.secret",
        ),
        ({"models": {"m": {"provider": "echo", "api_key": "CLEAR"}}}, "models.m.api_key"),
        ({"weather": {"credentials": {"user": "CLEAR"}}}, "weather.credentials.user"),
        ({"plugins": {"weather": {"api_tokens": ["ok", "CLEAR"]}}}, "plugins.weather.api_tokens"),
    ],
    ids=["webhook-secret", "model-api-key", "nested-under-secret-key", "list"],
)
async def test_a_literal_secret_in_a_free_form_section_is_refused(cfg_settings, patch, key):
    async with running_app(cfg_settings) as (_app, client):
        refused = await client.patch("/gateway/config", headers=ADMIN, json=patch)
        assert refused.status_code == 400
        text = await refused.get_data(as_text=True)
        assert "CLEAR" not in text
        error = (await refused.get_json())["error"]
        assert error["code"] == "secret_literal_refused"
        assert error["message"].startswith(f"{key}: ")
        assert "env" in error["message"]
        assert (await shown_config(client))["sources"]["overrides_present"] is False
    assert not cfg_settings.overrides_path.exists()


async def test_a_model_whose_name_looks_secret_is_not_refused(cfg_settings):
    async with running_app(cfg_settings) as (_app, client):
        patch = {"models": {"token-counter": {"provider": "echo", "description": "counts"}}}
        patched = await client.patch("/gateway/config", headers=ADMIN, json=patch)
        assert patched.status_code == 200, await patched.get_data()


async def test_a_secret_file_outside_the_config_folder_reveals_nothing(cfg_settings, tmp_path):
    (tmp_path / "empty.secret").write_text("")
    outside = {
        "missing": tmp_path / "no-such.secret",
        "directory": tmp_path,
        "empty": tmp_path / "empty.secret",
    }
    async with running_app(cfg_settings) as (_app, client):
        messages = {}
        for name, path in outside.items():
            patch = {"models": {"m": exfil_model("http://127.0.0.1:9", {"file": str(path)})}}
            refused = await client.patch("/gateway/config", headers=ADMIN, json=patch)
            assert refused.status_code == 400, name
            error = (await refused.get_json())["error"]
            assert error["code"] == "config_invalid"
            messages[name] = error["message"].replace(str(path), "<path>")
        assert len(set(messages.values())) == 1, messages
        message = messages["missing"]
        assert message.startswith("models.m.api_key: ")
        assert message.endswith("cannot read secret file <path>; nothing was written")
        for detail in ("No such file", "directory", "empty", "ermission"):
            assert detail not in message
    assert not cfg_settings.overrides_path.exists()
