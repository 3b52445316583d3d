"""``[plugins.pipelines]`` is checked before it is used: a config PATCH (and reload)
refuses a bad value naming the key and writes nothing, ``gateway config check`` exits
non-zero naming it, and start-up fails naming it; ``max_concurrent_runs = 0`` (a worker
that serves the API but claims no runs) is accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, base_config, running_app, write_config
from tests.conftest import gateway_cli as gateway
from tests.pipelines_fixtures import PIPELINES_SOURCE, pipelines_settings, write_pipelines
from tests.test_pipelines_api import start

UNSET_ENV = "PIPELINES_CONFIG_TEST_UNSET_SECRET"

# (the section's bad value, the key the problem names)
BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"max_concurrent_runs": "x"},
        "max_concurrent_runs: must be an integer from 0 to 1000 (got 'x')",
    ),
    ({"max_concurrent_runs": -1}, "max_concurrent_runs: must be an integer from 0 to 1000"),
    ({"max_concurrent_runs": True}, "max_concurrent_runs: must be an integer from 0 to 1000"),
    ({"max_concurrent_runs": 1.5}, "max_concurrent_runs: must be an integer from 0 to 1000"),
    ({"lease_seconds": "soon"}, "lease_seconds: must be a number of seconds from 1 to 3600"),
    ({"lease_seconds": 0}, "lease_seconds: must be a number of seconds from 1 to 3600"),
    ({"poll_seconds": -0.5}, "poll_seconds: must be a number of seconds from 0.05 to 600"),
    ({"poll_seconds": False}, "poll_seconds: must be a number of seconds from 0.05 to 600"),
    # Past the ceilings (finding 3 of issue 9): each bound is a check of its own.
    ({"max_concurrent_runs": 1001}, "max_concurrent_runs: must be an integer from 0 to 1000"),
    ({"lease_seconds": 3601}, "lease_seconds: must be a number of seconds from 1 to 3600"),
    ({"poll_seconds": 1e-300}, "poll_seconds: must be a number of seconds from 0.05 to 600"),
    ({"poll_seconds": 601}, "poll_seconds: must be a number of seconds from 0.05 to 600"),
    ({"directory": 5}, "directory: must be a path"),
    ({"max_crashed_claims": 0}, "max_crashed_claims: must be an integer from 1 to 100 (got 0)"),
    ({"max_crashed_claims": "3"}, "max_crashed_claims: must be an integer from 1 to 100"),
    ({"webhooks": "gh"}, "webhooks: must be a table of webhook tables"),
    ({"webhooks": {"gh": "three"}}, "webhooks.gh: must be a table with pipeline and secret"),
    ({"webhooks": {"gh": {"secret": {"env": "HOME"}}}}, "webhooks.gh.pipeline: must be"),
    ({"webhooks": {"gh": {"pipeline": "three"}}}, "webhooks.gh.secret: a secret is a string"),
    (
        {"webhooks": {"gh": {"pipeline": "three", "secret": {"env": UNSET_ENV}}}},
        f"webhooks.gh.secret: environment variable {UNSET_ENV} is not set",
    ),
    (
        {
            "webhooks": {
                "gh": {"pipeline": "three", "secret": {"env": "HOME"}, "tolerance_seconds": 0}
            }
        },
        "webhooks.gh.tolerance_seconds: must be a number of seconds from 1 to 86400 (got 0)",
    ),
    (
        {
            "webhooks": {
                "gh": {"pipeline": "three", "secret": {"env": "HOME"}, "tolerance_seconds": "5m"}
            }
        },
        "webhooks.gh.tolerance_seconds: must be a number of seconds from 1 to 86400",
    ),
]
IDS = [next(iter(section)) + ":" + repr(next(iter(section.values()))) for section, _ in BAD]


@pytest.mark.parametrize(("section", "problem"), BAD, ids=IDS)
async def test_a_patch_with_a_bad_value_is_refused_naming_the_key(make_settings, section, problem):
    allowed = {"allowed_env": ["HOME", UNSET_ENV]}  # a PATCH may name these references
    async with running_app(make_settings(secrets=allowed)) as (_app, client):
        patch = {"plugins": {"pipelines": section}}
        answer = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert answer.status_code == 400, await answer.get_data()
        error = (await answer.get_json())["error"]
        assert error["code"] == "config_invalid"
        assert f"plugins.pipelines.{problem}" in error["message"]
        assert error["message"].endswith("nothing was written")
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["sources"]["overrides_present"] is False


async def test_a_patch_with_zero_concurrent_runs_is_accepted(make_settings):
    async with running_app(make_settings()) as (_app, client):
        patch = {"plugins": {"pipelines": {"max_concurrent_runs": 0, "lease_seconds": 2.5}}}
        answer = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert answer.status_code == 200, await answer.get_data()
        report = await answer.get_json()
        assert "plugins.pipelines.max_concurrent_runs" in report["restart_required"]
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
        assert shown["sources"]["overrides_present"] is True


@pytest.mark.parametrize(
    ("section", "problem"),
    [BAD[0], BAD[5], BAD[-1]],
    ids=[IDS[0], IDS[5], IDS[-1]],
)
def test_config_check_names_the_bad_key(tmp_path, section, problem):
    config = base_config(tmp_path / "state")
    config["plugins"] = {"pipelines": section}
    path = write_config(tmp_path / "gateway.toml", config)
    result = gateway("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert f"error: plugins.pipelines.{problem}" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_accepts_a_valid_section(tmp_path):
    config = base_config(tmp_path / "state")
    (tmp_path / "hook.secret").write_text("s3cret\n")
    config["plugins"] = {
        "pipelines": {
            "max_concurrent_runs": 0,
            "lease_seconds": 5,
            "poll_seconds": 0.5,
            "max_crashed_claims": 5,
            "directory": "pipelines",
            "webhooks": {
                "gh": {"pipeline": "three", "secret": {"file": "hook.secret"}},
                "ci": {"pipeline": "three", "secret": {"env": "PIPELINES_CONFIG_TEST_SET"}},
            },
        }
    }
    path = write_config(tmp_path / "gateway.toml", config)
    result = gateway(
        "config", "check", "--config", str(path), cwd=tmp_path, PIPELINES_CONFIG_TEST_SET="x"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok:")


@pytest.mark.parametrize(
    ("section", "problem"), [BAD[0], BAD[6], BAD[8]], ids=[IDS[0], IDS[6], IDS[8]]
)
async def test_start_up_with_a_bad_value_fails_naming_the_key(make_settings, section, problem):
    settings = make_settings(plugins={"pipelines": section})
    with pytest.raises(Exception, match=f"plugins\\.pipelines\\.{problem.split(':')[0]}: must"):
        async with running_app(settings):
            pass


async def test_a_worker_with_zero_concurrent_runs_serves_the_api_but_claims_none(
    make_settings, tmp_path: Path
):
    directory = write_pipelines(tmp_path, "testing", PIPELINES_SOURCE)
    settings = pipelines_settings(make_settings, directory, max_concurrent_runs=0)
    async with running_app(settings) as (_app, client):
        response = await start(client, "three", {"input": {"n": 1}})
        assert response.status_code == 202, await response.get_data()
        run_id = (await response.get_json())["runId"]
        await asyncio.sleep(0.3)  # six polls of the store at poll_seconds 0.05
        record = await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json()
        assert record["status"] == "pending"
        status = await (await client.get("/gateway/status", headers=ADMIN)).get_json()
        assert status["plugin_status"]["pipelines"]["max_concurrent_runs"] == 0
