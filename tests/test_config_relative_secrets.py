"""Secret files named by a relative path in a plugin's section resolve next to the config
file, as the host's own secrets do, whatever the working directory: a model's
``api_key = { file = "..." }`` and a pipeline webhook's ``secret = { file = "..." }``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from host.settings import load_settings
from tests.conftest import ADMIN, base_config, running_app
from tests.pipelines_fixtures import PIPELINES_SOURCE, signed
from tests.test_pipelines_api import wait_status


def write_config(tmp_path: Path, extra: dict[str, Any]) -> Path:
    """``etc/gateway.toml`` under ``tmp_path``, its state in ``tmp_path/state``."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    config = conf_dir / "gateway.toml"
    config.write_text(tomli_w.dumps({**base_config(tmp_path / "state"), **extra}))
    return config


async def test_a_models_relative_api_key_file_is_read_beside_the_config(
    tmp_path, fake_upstream, monkeypatch
):
    config = write_config(
        tmp_path,
        {
            "models": {
                "gpt-file-key": {
                    "provider": "openai",
                    "base_url": f"{fake_upstream.url}/v1",
                    "upstream_model": "normal",
                    "api_key": {"file": "upstream.key"},
                }
            }
        },
    )
    (config.parent / "upstream.key").write_text(fake_upstream.api_key + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "upstream.key").write_text("sk-the-wrong-key-from-the-cwd")
    monkeypatch.chdir(elsewhere)  # not the config's folder: resolution must not use the cwd
    async with running_app(load_settings(str(config))) as (_app, client):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-file-key", "messages": [{"role": "user", "content": "hi"}]},
            headers=ADMIN,
        )
        assert response.status_code == 200, await response.get_data()
    seen = fake_upstream.requests[-1]
    assert seen.headers["Authorization"] == f"Bearer {fake_upstream.api_key}"


async def test_a_missing_relative_api_key_file_is_named_in_the_error(tmp_path, monkeypatch):
    config = write_config(
        tmp_path,
        {
            "models": {
                "gpt-file-key": {
                    "provider": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key": {"file": "missing.key"},
                }
            }
        },
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match=r"models\.gpt-file-key\.api_key.*missing\.key"):
        async with running_app(load_settings(str(config))):
            pass


async def test_a_webhooks_relative_secret_file_is_read_beside_the_config(tmp_path, monkeypatch):
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "testing.py").write_text(PIPELINES_SOURCE)
    config = write_config(
        tmp_path,
        {
            "plugins": {
                "pipelines": {
                    "directory": str(pipelines),
                    "poll_seconds": 0.05,
                    "webhooks": {"gh": {"pipeline": "three", "secret": {"file": "hook.secret"}}},
                }
            }
        },
    )
    (config.parent / "hook.secret").write_text("s3cret-from-a-file\n")
    monkeypatch.chdir(tmp_path)
    body = json.dumps({"n": 5}).encode()
    headers = signed(body, "d-1", "s3cret-from-a-file")
    async with running_app(load_settings(str(config))) as (_app, client):
        response = await client.post("/triggers/webhook:gh/webhook", data=body, headers=headers)
        assert response.status_code == 202, await response.get_data()
        run = await wait_status(client, (await response.get_json())["runId"], {"completed"})
        assert run["output"] == {"v": 13} and run["trigger"]["type"] == "webhook"
        bad = dict(headers, **{"X-Gateway-Signature": "sha256=" + "0" * 64})
        refused = await client.post("/triggers/webhook:gh/webhook", data=body, headers=bad)
        assert refused.status_code == 401
