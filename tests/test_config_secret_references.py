"""Secret references come from the config file. A ``PATCH /gateway/config`` (even the
admin's) may name a reference only when the config file's ``[secrets]`` allows it
(``allowed_env`` names or patterns, ``allowed_files_dir`` after symlinks) or when the
config file has the same one at the same key; otherwise 403
``secret_reference_not_allowed`` naming the key, and nothing is written. ``[secrets]``
itself cannot be patched, and an overrides file edited by other means is held to the
same rule at reload and at start."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import ADMIN, base_config, running_app, write_config
from tests.conftest import gateway_cli as gateway
from tests.openai_helpers import USER

ALLOWED_ENV = "GW_REFS_ALLOWED_KEY"
OTHER_ENV = "GW_REFS_OTHER_KEY"
OTHER_VALUE = "other-env-value-0123456789"
OUTSIDE_VALUE = "outside-file-value-0123456789"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "inside.secret").write_text("inside-file-value-0123456789")
    outside = tmp_path / "outside.secret"
    outside.write_text(OUTSIDE_VALUE)
    (allowed / "link.secret").symlink_to(outside)
    return {"allowed": allowed, "outside": outside}


@pytest.fixture
def settings(make_settings: Any, dirs: dict[str, Path], monkeypatch: Any) -> Any:
    monkeypatch.setenv(ALLOWED_ENV, "allowed-env-value-0123456789")
    monkeypatch.setenv(OTHER_ENV, OTHER_VALUE)
    return make_settings(
        secrets={"allowed_env": ["GW_REFS_ALLOWED_*"], "allowed_files_dir": str(dirs["allowed"])}
    )


def model(url: str, api_key: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "base_url": f"{url}/v1",
        "upstream_model": "normal",
        "api_key": api_key,
    }


def refused_cases(dirs: dict[str, Path]) -> dict[str, tuple[dict[str, Any], str]]:
    """Each patch the admin may not make, and the key its 403 names."""
    allowed, outside = dirs["allowed"], dirs["outside"]
    url = "http://127.0.0.1:9"
    return {
        "env-not-listed": (
            {"models": {"m": model(url, {"env": OTHER_ENV})}},
            "models.m.api_key",
        ),
        "env-of-a-token": (
            {"auth": {"tokens": {"x": {"token": {"env": OTHER_ENV}}}}},
            "auth.tokens.x.token",
        ),
        "file-outside": (
            {"models": {"m": model(url, {"file": str(outside)})}},
            "models.m.api_key",
        ),
        "symlink-out-of-the-folder": (
            {"models": {"m": model(url, {"file": str(allowed / "link.secret")})}},
            "models.m.api_key",
        ),
        "dot-dot-out-of-the-folder": (
            {"models": {"m": model(url, {"file": f"{allowed}/../outside.secret"})}},
            "models.m.api_key",
        ),
        "in-a-list": (
            {"weather": {"keys": ["plain", {"env": OTHER_ENV}]}},
            "weather.keys[1]",
        ),
        "webhook-secret": (
            {
                "plugins": {
                    "pipelines": {
                        "webhooks": {"gh": {"pipeline": "p", "secret": {"env": OTHER_ENV}}}
                    }
                }
            },
            "plugins.pipelines.webhooks.gh.secret",
        ),
    }


async def test_a_patch_naming_a_reference_the_config_file_does_not_allow_is_refused(settings, dirs):
    async with running_app(settings) as (_app, client):
        before = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        for name, (patch, key) in refused_cases(dirs).items():
            refused = await client.patch("/gateway/config", headers=ADMIN, json=patch)
            assert refused.status_code == 403, (name, await refused.get_data())
            text = await refused.get_data(as_text=True)
            assert OTHER_VALUE not in text and OUTSIDE_VALUE not in text, name
            error = (await refused.get_json())["error"]
            assert error["code"] == "secret_reference_not_allowed", name
            assert error["message"].startswith(f"{key}: "), (name, error)
            assert error["message"].endswith("nothing was written"), name
            assert str(dirs["outside"]) not in error["message"], name  # where a link leads
            after = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
            assert after == before, name
    assert not settings.overrides_path.exists()


async def test_a_patch_may_name_the_references_the_config_file_allows(
    settings, dirs, fake_upstream, monkeypatch
):
    monkeypatch.setenv(ALLOWED_ENV, fake_upstream.api_key)
    (dirs["allowed"] / "inside.secret").write_text(fake_upstream.api_key)
    async with running_app(settings) as (_app, client):
        patch = {
            "models": {
                "by-env": model(fake_upstream.url, {"env": ALLOWED_ENV}),
                "by-file": model(
                    fake_upstream.url, {"file": str(dirs["allowed"] / "inside.secret")}
                ),
            }
        }
        patched = await client.patch("/gateway/config", headers=ADMIN, json=patch)
        assert patched.status_code == 200, await patched.get_data()
        for name in ("by-env", "by-file"):
            chat = await client.post(
                "/v1/chat/completions", headers=ADMIN, json={"model": name, "messages": USER}
            )
            assert chat.status_code == 200, await chat.get_data()
    sent = {r.headers["Authorization"] for r in fake_upstream.requests}
    assert sent == {f"Bearer {fake_upstream.api_key}"}
    written = tomllib.loads(settings.overrides_path.read_text())
    assert written["models"]["by-env"]["api_key"] == {"env": ALLOWED_ENV}


async def test_a_reference_the_config_file_has_at_the_same_key_may_be_written_again(
    make_settings, fake_upstream, monkeypatch
):
    monkeypatch.setenv(OTHER_ENV, fake_upstream.api_key)
    own = model(fake_upstream.url, {"env": OTHER_ENV})
    settings = make_settings(models={"gpt": own})  # and no [secrets] at all
    async with running_app(settings) as (_app, client):
        same = {"models": {"gpt": {**own, "description": "renamed"}}}
        patched = await client.patch("/gateway/config", headers=ADMIN, json=same)
        assert patched.status_code == 200, await patched.get_data()
        elsewhere = {"models": {"copy": own}}
        refused = await client.patch("/gateway/config", headers=ADMIN, json=elsewhere)
        assert refused.status_code == 403
        assert (await refused.get_json())["error"]["message"].startswith("models.copy.api_key: ")


async def test_the_secrets_table_cannot_be_patched(settings):
    async with running_app(settings) as (_app, client):
        for patch in ({"secrets": {"allowed_env": ["*"]}}, {"secrets": None}):
            refused = await client.patch("/gateway/config", headers=ADMIN, json=patch)
            assert refused.status_code == 403
            error = (await refused.get_json())["error"]
            assert error["code"] == "config_key_read_only"
            assert error["message"].startswith("secrets: ")
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["config"]["secrets"]["allowed_env"] == ["GW_REFS_ALLOWED_*"]
    assert not settings.overrides_path.exists()


async def test_an_overrides_file_with_a_reference_not_allowed_is_refused_by_reload(settings):
    async with running_app(settings) as (_app, client):
        settings.overrides_path.write_text(
            tomli_w.dumps({"auth": {"tokens": {"x": {"token": {"env": OTHER_ENV}}}}})
        )
        refused = await client.post("/gateway/reload", headers=ADMIN)
        assert refused.status_code == 400
        error = (await refused.get_json())["error"]
        assert error["code"] == "config_invalid"
        assert "auth.tokens.x.token: " in error["message"]
        assert str(settings.overrides_path) in error["message"]
        assert error["message"].endswith("the running configuration is unchanged")
        status = await client.get(
            "/gateway/status", headers={"Authorization": f"Bearer {OTHER_VALUE}"}
        )
        assert status.status_code == 401


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"models": {"m": {"provider": "echo", "api_key": {"env": "HOME"}}}}, "models.m.api_key"),
        ({"secrets": {"allowed_env": ["*"]}}, "secrets"),
    ],
    ids=["reference", "secrets-table"],
)
def test_an_overrides_file_the_config_file_does_not_allow_stops_the_start(tmp_path, overrides, key):
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.overrides.toml").write_text(tomli_w.dumps(overrides))
    config = write_config(tmp_path / "gateway.toml", base_config(state))
    checked = gateway("config", "check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode != 0
    assert f"{key}: " in checked.stderr and "config.overrides.toml" in checked.stderr
