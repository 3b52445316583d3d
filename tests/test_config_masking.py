"""``GET /gateway/config`` and ``gateway config show`` show no secret: the user-info of
every URL in any string value is masked (a DSN's password, a token used as a URL's user
name, in any section and inside longer text), values under keys named like secrets in
the sections the host does not type are masked, and so are values under the keys a
plugin declares secret (``gateway_register_secret_keys``) whatever their names. A PATCH
that writes a literal at a declared key is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from host.settings import ConfigError
from tests.conftest import ADMIN, running_app, write_config
from tests.conftest import gateway_cli as gateway
from tests.plugins_for_tests import vault_keys
from tests.plugins_for_tests.kit import fake_distribution

SECRETS = [
    "dsn-password-0123",
    "model-url-password-0123",
    "redis-password-0123",
    "ghp_tokenAsUser0123",
    "embedded-password-0123",
    "passphrase-literal-0123",
    "signing-literal-0123",
    "authorization-literal-0123",
    "unlock-literal-0123",
    "seed-literal-0123",
]

CONFIG: dict[str, Any] = {
    "models": {
        "gpt": {
            "provider": "openai",
            "base_url": "http://gw-user:model-url-password-0123@127.0.0.1:9/v1",
        },
    },
    "plugins": {
        "weather": {
            "dsn": "postgresql+asyncpg://wx:dsn-password-0123@db.internal:5432/wx",
            "passphrase": "passphrase-literal-0123",
            "signing_key": "signing-literal-0123",
            "mirrors": [
                "https://ghp_tokenAsUser0123@github.com/org/repo.git",
                "https://ok.example",
            ],
            "note": "run curl https://u:embedded-password-0123@h.example/x now",
            "max_tokens": 1000,
            "city": "Lisbon",
        },
        "vault": {"unlock": "unlock-literal-0123", "region": "eu"},
    },
    "cache": {"url": "redis://:redis-password-0123@cache.internal:6379/0"},
    "headers": {"authorization": "authorization-literal-0123"},
    "vault": {"main": {"seed": "seed-literal-0123", "size": 3}},
}

EXPECTED = {
    "base_url": "http://gw-user:***@127.0.0.1:9/v1",
    "dsn": "postgresql+asyncpg://wx:***@db.internal:5432/wx",
    "mirrors": ["https://***@github.com/org/repo.git", "https://ok.example"],
    "note": "run curl https://u:***@h.example/x now",
    "cache": {"url": "redis://:***@cache.internal:6379/0"},
}


def assert_masked(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret
    shown = json.loads(text)["config"]
    assert shown["models"]["gpt"]["base_url"] == EXPECTED["base_url"]
    weather = shown["plugins"]["weather"]
    assert weather["dsn"] == EXPECTED["dsn"]
    assert weather["mirrors"] == EXPECTED["mirrors"]
    assert weather["note"] == EXPECTED["note"]
    assert weather["passphrase"] == weather["signing_key"] == "**********"
    assert (weather["max_tokens"], weather["city"]) == (1000, "Lisbon")  # not secrets
    assert shown["cache"] == EXPECTED["cache"]
    assert shown["headers"] == {"authorization": "**********"}
    # Declared by the vault plugin: masked though the names look harmless.
    assert shown["plugins"]["vault"] == {"enabled": True, "unlock": "**********", "region": "eu"}
    assert shown["vault"] == {"main": {"seed": "**********", "size": 3}}


async def test_get_gateway_config_masks_urls_named_and_declared_secrets(make_settings):
    settings = make_settings(**CONFIG)
    async with running_app(settings, extra_plugins=[("vault", vault_keys)]) as (_app, client):
        response = await client.get("/gateway/config", headers=ADMIN)
        assert response.status_code == 200
        assert_masked(await response.get_data(as_text=True))
        plugins = await (await client.get("/gateway/plugins", headers=ADMIN)).get_json()
        assert plugins["registrations"]["vault"]["secret_keys"] == [
            "plugins.vault.unlock",
            "vault.*.seed",
        ]


def test_gateway_config_show_masks_urls_named_and_declared_secrets(tmp_path: Path):
    site = fake_distribution(tmp_path / "site", "vault", {"vault": vault_keys.__name__})
    write_config(tmp_path / "gateway.toml", CONFIG)
    shown = gateway("config", "show", cwd=tmp_path, site=site)
    assert shown.returncode == 0, shown.stderr
    assert_masked(shown.stdout)


async def test_gateway_register_secret_keys_refuses_a_literal_at_a_declared_key(make_settings):
    async with running_app(make_settings(), extra_plugins=[("vault", vault_keys)]) as (_, client):
        for patch, key in (
            ({"vault": {"b": {"seed": "CLEAR"}}}, "vault.b.seed"),
            ({"plugins": {"vault": {"unlock": "CLEAR"}}}, "plugins.vault.unlock"),
        ):
            refused = await client.patch("/gateway/config", headers=ADMIN, json=patch)
            assert refused.status_code == 400
            error = (await refused.get_json())["error"]
            assert error["code"] == "secret_literal_refused"
            assert error["message"].startswith(f"{key}: ")
        harmless = {"vault": {"b": {"size": 4}}}
        assert (
            await client.patch("/gateway/config", headers=ADMIN, json=harmless)
        ).status_code == 200


# -- the store's URL ---------------------------------------------------------------------------


async def test_a_postgresql_store_password_never_shows_however_it_is_given(
    make_settings, postgres_url, monkeypatch
):
    """The URL as a literal (its password masked), as a reference to a variable holding
    all of it, or without a password beside ``storage.password``: the gateway runs on the
    database each way, and neither the config view nor the status shows the password."""
    url = sa.engine.make_url(postgres_url)
    password = url.password
    assert password
    bare = url._replace(password=None).render_as_string(hide_password=False)
    monkeypatch.setenv("GW_TEST_DB_URL", postgres_url)
    monkeypatch.setenv("GW_TEST_DB_PASSWORD", password)
    ways = [
        ({"url": postgres_url}, bare.replace("@", ":***@", 1)),
        ({"url": {"env": "GW_TEST_DB_URL"}}, {"env": "GW_TEST_DB_URL"}),
        # A user name alone may be a token: masked whole (see the module's docstring).
        (
            {"url": bare, "password": {"env": "GW_TEST_DB_PASSWORD"}},
            bare.replace("gateway@", "***@"),
        ),
    ]
    for storage, shown in ways:
        async with running_app(make_settings(storage=storage)) as (_app, client):
            config = await client.get("/gateway/config", headers=ADMIN)
            status = await client.get("/gateway/status", headers=ADMIN)
            texts = [await r.get_data(as_text=True) for r in (config, status)]
            assert password not in texts[0] + texts[1]
            assert json.loads(texts[0])["config"]["storage"]["url"] == shown
            assert json.loads(texts[1])["store"]["dialect"] == "postgresql"


def test_store_url_mistakes_are_named_without_the_password(make_settings, monkeypatch):
    monkeypatch.setenv("GW_TEST_DB_PASSWORD", "other-pw-0123")
    cases = [
        ({"url": "mysql://gw:pw-0123@db/gw"}, "'mysql' is not a supported store"),
        ({"url": "not a url pw-0123"}, "storage.url is not a database URL"),
        (
            {"url": "postgresql://gw:pw-0123@db/gw", "password": {"env": "GW_TEST_DB_PASSWORD"}},
            "in storage.url or in storage.password, not both",
        ),
        ({"password": {"env": "GW_TEST_DB_PASSWORD"}}, "storage.password is for a PostgreSQL"),
        ({"url": {"env": "GW_TEST_NO_SUCH_VARIABLE"}}, "GW_TEST_NO_SUCH_VARIABLE is not set"),
    ]
    for storage, message in cases:
        with pytest.raises(ConfigError) as caught:
            make_settings(storage=storage)
        assert message in str(caught.value)
        assert "pw-0123" not in str(caught.value)


def test_postgres_urls_of_every_spelling_use_the_asyncpg_driver(make_settings):
    for raw in ("postgres://gw@db/gw", "postgresql://gw@db/gw", "postgresql+asyncpg://gw@db/gw"):
        settings = make_settings(storage={"url": raw})
        assert settings.storage.resolved_url(settings.state_dir) == "postgresql+asyncpg://gw@db/gw"
