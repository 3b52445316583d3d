"""``[models.<name>]`` is checked wherever a configuration enters: ``gateway config check``,
``PATCH /gateway/config`` and ``POST /gateway/reload`` (through the
``gateway_validate_config`` hook), each problem naming the model and the key; a refused
configuration writes nothing and leaves the running one in place."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from host.settings import Settings, load_settings
from tests.conftest import ADMIN, base_config, gateway_cli, running_app, write_config
from tests.openai_helpers import USER, assert_error
from tests.plugins_for_tests.kit import Plugin

BROKEN_MODELS: dict[str, dict[str, Any]] = {
    "typo": {"provider": "opnai", "base_url": "http://127.0.0.1:9/v1"},
    "nourl": {"provider": "openai"},
    "zero": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "read_timeout_seconds": 0},
    "ftp": {"provider": "openai", "base_url": "ftp://files.example/v1"},
    "extra": {"provider": "echo", "colour": "blue"},
    "flag": {"provider": "echo", "stream_usage": "sometimes"},
    "loop": {"provider": "echo", "fallbacks": ["loop"]},
    "lost": {"provider": "echo", "fallbacks": ["nowhere"]},
    "nodeploy": {"provider": "openai", "deployments": [{"weight": 2}]},
    "heavy": {"provider": "echo", "deployments": [{"weight": 0}]},
}
# One problem per broken model, each naming the model and the key.
EXPECTED = [
    "models.typo.provider: unknown provider 'opnai' (known: echo, openai)",
    "models.nourl.base_url: required for provider 'openai'",
    "models.zero.read_timeout_seconds: Input should be greater than or equal to 0.1",
    "models.ftp.base_url: Value error, 'ftp://files.example/v1' is not an http:// or https:// URL",
    "models.extra.colour: Extra inputs are not permitted",
    "models.flag.stream_usage: Input should be a valid boolean",
    "models.loop.fallbacks: 'loop': a model cannot fall back to itself",
    "models.lost.fallbacks: 'nowhere': no such model",
    "models.nodeploy.deployments.base_url: required for provider 'openai'",
    "models.heavy.deployments.0.weight: Input should be greater than 0",
]
GOOD_MODELS = {"echo": {"provider": "echo"}, "quiet": {"provider": "echo", "stream_usage": False}}


def config_check(config: Path) -> subprocess.CompletedProcess[str]:
    return gateway_cli("config", "check", "--config", str(config), cwd=config.parent)


def test_config_check_names_the_model_and_key_of_every_models_problem(tmp_path):
    data = base_config(tmp_path / "state")
    good = config_check(
        write_config(tmp_path / "good" / "gateway.toml", {**data, "models": GOOD_MODELS})
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("ok: ")
    broken = config_check(
        write_config(tmp_path / "bad" / "gateway.toml", {**data, "models": BROKEN_MODELS})
    )
    assert broken.returncode == 1
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(EXPECTED), broken.stderr
    for expected in EXPECTED:
        assert any(expected in line for line in errors), (expected, broken.stderr)
    assert not (tmp_path / "state").exists()  # a check creates no state


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    data = {**base_config(tmp_path / "state"), "models": GOOD_MODELS}
    return write_config(tmp_path / "conf" / "gateway.toml", data)


async def model_ids(client: Any) -> list[str]:
    listed = await (await client.get("/v1/models", headers=ADMIN)).get_json()
    return [m["id"] for m in listed["data"]]


@pytest.mark.parametrize(("name", "expected"), list(zip(BROKEN_MODELS, EXPECTED, strict=True)))
async def test_patch_with_a_broken_model_is_refused_and_nothing_is_written(
    config_file, name, expected
):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        before = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        response = await client.patch(
            "/gateway/config", json={"models": {name: BROKEN_MODELS[name]}}, headers=ADMIN
        )
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        assert expected in error["message"] and "nothing was written" in error["message"]
        assert not settings.overrides_path.exists()
        after = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert after == before
        assert await model_ids(client) == ["echo", "quiet"]


async def test_patch_with_a_good_model_applies_it_live(config_file):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        patch = {"models": {"fresh": {"provider": "echo", "description": "patched in"}}}
        response = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert response.status_code == 200, await response.get_json()
        assert await model_ids(client) == ["echo", "fresh", "quiet"]
        answer = await client.post(
            "/v1/chat/completions", json={"model": "fresh", "messages": USER}, headers=ADMIN
        )
        assert (await answer.get_json())["choices"][0]["message"]["content"] == "echo: hi"


async def test_reload_with_a_broken_models_section_keeps_the_running_models(config_file):
    settings = load_settings(config_file)
    async with running_app(settings) as (_app, client):
        before = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        data = {**base_config(config_file.parent.parent / "state"), "models": BROKEN_MODELS}
        write_config(config_file, data)
        response = await client.post("/gateway/reload", headers=ADMIN)
        assert response.status_code == 400
        error = assert_error(await response.get_json(), "config_invalid")
        for expected in EXPECTED:
            assert expected in error["message"]
        assert "the running configuration is unchanged" in error["message"]
        after = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert after == before
        assert await model_ids(client) == ["echo", "quiet"]
        answer = await client.post(
            "/v1/chat/completions", json={"model": "quiet", "messages": USER}, headers=ADMIN
        )
        assert answer.status_code == 200


# -- the hook itself, from a plugin of the test's own ----------------------------------------


def _weather_plugin(calls: list[str]) -> Plugin:
    """Refuses ``[weather] city = "Atlantis"`` (async), and one that always raises."""

    async def validate(settings: Settings) -> list[str]:
        calls.append((settings.extra_section("weather") or {}).get("city", "-"))
        if (settings.extra_section("weather") or {}).get("city") == "Atlantis":
            return ["weather.city: 'Atlantis' cannot be found on any map"]
        return []

    return Plugin(gateway_validate_config=validate)


def _exploding_plugin() -> Plugin:
    def validate(app: Any, settings: Settings) -> list[str]:
        if (settings.extra_section("weather") or {}).get("city") == "Pompeii":
            raise RuntimeError("volcano")
        return []

    return Plugin(gateway_validate_config=validate)


async def test_gateway_validate_config_problems_refuse_a_patch_and_a_reload(config_file):
    calls: list[str] = []
    plugins = [("weather", _weather_plugin(calls)), ("volcano", _exploding_plugin())]
    settings = load_settings(config_file)
    async with running_app(settings, extra_plugins=plugins) as (_app, client):
        refused = await client.patch(
            "/gateway/config", json={"weather": {"city": "Atlantis"}}, headers=ADMIN
        )
        assert refused.status_code == 400
        error = assert_error(await refused.get_json(), "config_invalid")
        assert error["message"].startswith("weather.city: 'Atlantis' cannot be found")
        assert not settings.overrides_path.exists()
        raised = await client.patch(
            "/gateway/config", json={"weather": {"city": "Pompeii"}}, headers=ADMIN
        )
        assert raised.status_code == 400
        error = assert_error(await raised.get_json(), "config_invalid")
        assert "plugin 'volcano' failed to check the configuration: volcano" in error["message"]
        accepted = await client.patch(
            "/gateway/config", json={"weather": {"city": "Lisbon"}}, headers=ADMIN
        )
        assert accepted.status_code == 200
        assert settings.overrides_path.exists()
        # The file now names Atlantis: a reload refuses it and Lisbon stays in force.
        data = {**base_config(config_file.parent.parent / "state"), "models": GOOD_MODELS}
        write_config(config_file, {**data, "weather": {"city": "Atlantis"}})
        (settings.overrides_path).unlink()
        reload = await client.post("/gateway/reload", headers=ADMIN)
        assert reload.status_code == 400
        assert "Atlantis" in assert_error(await reload.get_json(), "config_invalid")["message"]
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["config"]["weather"] == {"city": "Lisbon"}
    assert calls == ["Atlantis", "Pompeii", "Lisbon", "Atlantis"]
