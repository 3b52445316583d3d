"""Policy gates are real permissions: checked before the handler runs, granted per token,
``"*"`` grants all; the seed-004 body field ``policy_gate`` must name the route's gate.
A refused request changes nothing."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN, READER, running_app

CONTROL = "allow_gateway_control"
CONFIG_WRITE = "allow_config_write"
OPS = {"Authorization": "Bearer ops-token-0123456789"}
CFG = {"Authorization": "Bearer cfg-token-0123456789"}
PATCH = {"events": {"page_limit_max": 321}}


@pytest.fixture
def gated_settings(make_settings: Any) -> Any:
    return make_settings(
        auth={
            "tokens": {
                "ops": {"token": "ops-token-0123456789", "gates": [CONTROL]},
                "cfg": {"token": "cfg-token-0123456789", "gates": [CONFIG_WRITE]},
            }
        }
    )


def assert_error(body: Any, code: str) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, body
    assert err["type"] and err["message"]
    return err


async def state(client: Any) -> str:
    response = await client.get("/gateway/status", headers=ADMIN)
    assert response.status_code == 200
    value: str = (await response.get_json())["state"]
    return value


async def page_limit(client: Any) -> int:
    response = await client.get("/gateway/config", headers=ADMIN)
    value: int = (await response.get_json())["config"]["events"]["page_limit_max"]
    return value


def overrides(state_dir: Path) -> Path:
    return state_dir / "config.overrides.toml"


async def test_token_without_the_gate_is_refused_and_nothing_changes(gated_settings, state_dir):
    async with running_app(gated_settings) as (_app, client):
        for headers in (READER, CFG):
            for path in ("/gateway/pause", "/gateway/reload"):
                denied = await client.post(path, headers=headers)
                assert denied.status_code == 403, path
                err = assert_error(await denied.get_json(), "policy_gate_denied")
                assert err["type"] == "permission_error"
                assert CONTROL in err["message"]
        assert await state(client) == "running"

        for headers in (READER, OPS):
            denied = await client.patch("/gateway/config", headers=headers, json=PATCH)
            assert denied.status_code == 403
            err = assert_error(await denied.get_json(), "policy_gate_denied")
            assert CONFIG_WRITE in err["message"]
        assert not overrides(state_dir).exists()
        assert await page_limit(client) == 1000

        metrics = await client.get("/metrics", headers=ADMIN)
        text = (await metrics.get_data()).decode()
        assert f'gateway_policy_gate_denials_total{{gate="{CONTROL}"}} 4.0' in text
        assert f'gateway_policy_gate_denials_total{{gate="{CONFIG_WRITE}"}} 2.0' in text


async def test_token_with_the_gate_succeeds(gated_settings, state_dir):
    async with running_app(gated_settings) as (_app, client):
        paused = await client.post("/gateway/pause", headers=OPS)
        assert paused.status_code == 200
        assert (await paused.get_json())["by"] == "ops"
        assert await state(client) == "paused"
        assert (await client.post("/gateway/resume", headers=OPS)).status_code == 200

        patched = await client.patch("/gateway/config", headers=CFG, json=PATCH)
        assert patched.status_code == 200, await patched.get_data()
        assert await page_limit(client) == 321
        assert tomllib.loads(overrides(state_dir).read_text()) == PATCH


async def test_star_grants_every_gate_including_plugin_gates(make_settings):
    async with running_app(make_settings(), load_entrypoints=True) as (_app, client):
        # allow_hello_write is declared by the installed example plugin, not the host.
        denied = await client.post("/hello/guest-book", headers=READER, json={"name": "r"})
        assert denied.status_code == 403
        assert (
            "allow_hello_write"
            in assert_error(await denied.get_json(), "policy_gate_denied")["message"]
        )
        signed = await client.post("/hello/guest-book", headers=ADMIN, json={"name": "ada"})
        assert signed.status_code == 201
        assert "ada" in (await signed.get_data()).decode()

        assert (await client.post("/gateway/pause", headers=ADMIN)).status_code == 200
        assert (await client.post("/gateway/resume", headers=ADMIN)).status_code == 200
        assert (await client.patch("/gateway/config", headers=ADMIN, json=PATCH)).status_code == 200
        assert (await client.post("/gateway/reload", headers=ADMIN)).status_code == 200
        revoked = await client.delete("/gateway/auth/sessions", headers=ADMIN)
        assert revoked.status_code == 200


@pytest.mark.parametrize("sent", [CONFIG_WRITE, "allow_everything", "", None, 7, [CONTROL]])
async def test_body_policy_gate_naming_another_gate_is_refused(client, sent):
    response = await client.post("/gateway/pause", headers=ADMIN, json={"policy_gate": sent})
    assert response.status_code == 403
    err = assert_error(await response.get_json(), "policy_gate_mismatch")
    assert CONTROL in err["message"]
    assert await state(client) == "running"


async def test_body_policy_gate_mismatch_on_config_patch_writes_nothing(client, state_dir):
    response = await client.patch(
        "/gateway/config", headers=ADMIN, json={"policy_gate": CONTROL, **PATCH}
    )
    assert response.status_code == 403
    assert_error(await response.get_json(), "policy_gate_mismatch")
    assert not overrides(state_dir).exists()
    assert await page_limit(client) == 1000


async def test_body_policy_gate_naming_the_right_gate_is_accepted(client, state_dir):
    paused = await client.post("/gateway/pause", headers=ADMIN, json={"policy_gate": CONTROL})
    assert paused.status_code == 200
    assert await state(client) == "paused"

    patched = await client.patch(
        "/gateway/config", headers=ADMIN, json={"policy_gate": CONFIG_WRITE, **PATCH}
    )
    assert patched.status_code == 200, await patched.get_data()
    # The compatibility field is not configuration: it is not written to the overrides.
    assert tomllib.loads(overrides(state_dir).read_text()) == PATCH


async def test_body_policy_gate_does_not_grant_a_missing_gate(gated_settings):
    async with running_app(gated_settings) as (_app, client):
        response = await client.post(
            "/gateway/pause", headers=READER, json={"policy_gate": CONTROL}
        )
        assert response.status_code == 403
        assert_error(await response.get_json(), "policy_gate_denied")
        assert await state(client) == "running"


async def test_body_policy_gate_on_a_route_without_a_gate_is_refused(client):
    response = await client.delete(
        "/gateway/auth/session", headers=ADMIN, json={"policy_gate": CONTROL}
    )
    assert response.status_code == 403
    err = assert_error(await response.get_json(), "policy_gate_mismatch")
    assert "no policy gate" in err["message"]


async def test_gate_denial_comes_before_body_validation(gated_settings, state_dir):
    async with running_app(gated_settings) as (_app, client):
        # An invalid patch from a caller without the gate is refused for the gate, so a
        # caller cannot probe the validator without the permission.
        response = await client.patch(
            "/gateway/config", headers=READER, json={"server": {"bind": "nonsense"}}
        )
        assert response.status_code == 403
        assert_error(await response.get_json(), "policy_gate_denied")
        assert not overrides(state_dir).exists()
