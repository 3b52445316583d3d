"""Named operator accounts of password-session mode (``[auth.users.<name>]``), through
HTTP: each account logs in as itself with its own gates and rate limit, a changed or
removed credential revokes that account's sessions, a mode switch revives none, a
restart keeps them, and the legacy ``auth.password`` is the account ``operator``."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from host.auth.passwords import PasswordHash, hash_password
from host.settings import ConfigError, load_settings
from host.storage import sqlite_url
from tests.conftest import (
    ADMIN,
    assert_error,
    bearer,
    db_execute,
    db_rows,
    gateway_cli,
    running_app,
    store_section,
)
from tests.plugins_for_tests.kit import subprocess_env

ALICE_PW = "alice's long passphrase"
BOB_PW = "bob's other passphrase"
BOB_ENV = "GW_TEST_BOB_PASSWORD"
LEGACY_PW = "the old operator password"
LEGACY_ENV = "GW_TEST_LEGACY_PASSWORD"
# Hashing is deliberately slow: make each hash once per test session.
ALICE_HASH = hash_password(ALICE_PW)
ALICE_NEW_PW = "alice's new passphrase"
ALICE_NEW_HASH = hash_password(ALICE_NEW_PW)


def accounts_auth(**extra: Any) -> dict[str, Any]:
    return {
        "mode": "password-session",
        "users": {
            "alice": {"password_hash": ALICE_HASH, "gates": ["*"]},
            "bob": {"password": {"env": BOB_ENV}, "rate_limit": {"per_minute": 3}},
        },
        **extra,
    }


@pytest.fixture
def accounts(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(BOB_ENV, BOB_PW)
    monkeypatch.setenv(LEGACY_ENV, LEGACY_PW)
    return lambda **extra: make_settings(auth=accounts_auth(**extra))


async def login(client: Any, user: str | None, password: str, **kwargs: Any) -> Any:
    body = {"password": password} if user is None else {"user": user, "password": password}
    return await client.post("/gateway/auth/session", json=body, **kwargs)


async def session(client: Any, user: str | None, password: str) -> str:
    response = await login(client, user, password)
    assert response.status_code == 200, await response.get_data()
    token: str = (await response.get_json())["access_token"]
    return token


async def whoami(client: Any, token: str) -> Any:
    response = await client.get("/gateway/status", headers=bearer(token))
    if response.status_code != 200:
        return response.status_code
    return (await response.get_json())["auth"]["principal"]


async def session_rows(url: str) -> list[tuple[str, str | None]]:
    """The stored sessions of the store at ``url``, read around the store."""
    sql = "SELECT principal, credential_fp FROM gateway_auth_sessions ORDER BY principal"
    return [(r[0], r[1]) for r in await db_rows(url, sql)]


# -- logging in -------------------------------------------------------------------------------


async def test_each_account_logs_in_as_itself_with_its_own_gates_and_rate_limit(accounts):
    async with running_app(accounts()) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        bob = await session(client, "bob", BOB_PW)
        assert await whoami(client, alice) == {"name": "alice", "kind": "session", "gates": ["*"]}
        assert await whoami(client, bob) == {"name": "bob", "kind": "session", "gates": []}

        denied = await client.post("/gateway/pause", headers=bearer(bob))
        assert denied.status_code == 403
        assert_error(await denied.get_json(), "policy_gate_denied")
        assert (await client.post("/gateway/pause", headers=bearer(alice))).status_code == 200

        # Bob's limit is 3 a minute, per account: a second session shares the bucket.
        bob2 = await session(client, "bob", BOB_PW)
        assert (await client.get("/gateway/status", headers=bearer(bob2))).status_code == 200
        refused = await client.get("/gateway/status", headers=bearer(bob2))
        assert refused.status_code == 429
        assert_error(await refused.get_json(), "rate_limited")
        assert refused.headers["Retry-After"].isdigit()
        assert (await client.get("/gateway/status", headers=bearer(alice))).status_code == 200


async def test_wrong_password_and_unknown_user_are_the_same_401(accounts, store_url):
    async with running_app(accounts()) as (_app, client):
        answers = [
            await login(client, "alice", "not alice's password"),
            await login(client, "bob", ALICE_PW),
            await login(client, "mallory", ALICE_PW),
        ]
        messages = set()
        for response in answers:
            assert response.status_code == 401
            err = assert_error(await response.get_json(), "invalid_credentials")
            assert err["type"] == "authentication_error"
            messages.add(err["message"])
        assert len(messages) == 1
    assert await session_rows(store_url) == []


async def test_a_principal_field_is_refused_and_issues_nothing(accounts, state_dir):
    async with running_app(accounts()) as (_app, client):
        response = await client.post(
            "/gateway/auth/session",
            json={"user": "bob", "password": BOB_PW, "principal": "admin"},
        )
        assert response.status_code == 400
        err = assert_error(await response.get_json(), "invalid_request_body")
        assert err["param"] == "principal"
        assert "user" in err["message"]
    assert await session_rows(sqlite_url(state_dir)) == []


async def test_user_is_required_unless_the_legacy_password_is_set(accounts, state_dir):
    async with running_app(accounts()) as (_app, client):
        response = await login(client, None, ALICE_PW)
        assert response.status_code == 400
        err = assert_error(await response.get_json(), "invalid_request_body")
        assert err["param"] == "user"
    assert await session_rows(sqlite_url(state_dir)) == []


async def test_legacy_password_is_the_operator_account_beside_named_ones(accounts, state_dir):
    settings = accounts(
        password={"env": LEGACY_ENV},
        session_gates=["allow_gateway_control"],
        session_rate_limit={"per_minute": 2},
    )
    async with running_app(settings) as (_app, client):
        legacy = await session(client, None, LEGACY_PW)
        named = await session(client, "operator", LEGACY_PW)
        for token in (legacy, named):
            assert await whoami(client, token) == {
                "name": "operator",
                "kind": "session",
                "gates": ["allow_gateway_control"],
            }
        # auth.session_rate_limit is the operator account's limit: 2 a minute.
        assert (await client.get("/gateway/status", headers=bearer(legacy))).status_code == 429
        alice = await session(client, "alice", ALICE_PW)
        assert (await whoami(client, alice))["name"] == "alice"
        wrong = await login(client, None, ALICE_PW)
        assert wrong.status_code == 401


def test_legacy_config_file_with_only_auth_password_still_starts(live_server, tmp_path):
    config = {"auth": {"mode": "password-session", "password": {"env": LEGACY_ENV}}}
    server = live_server(config=config, env={LEGACY_ENV: LEGACY_PW})
    issued = httpx.post(f"{server.url}/gateway/auth/session", json={"password": LEGACY_PW})
    assert issued.status_code == 200, server.log()
    token = issued.json()["access_token"]
    status = httpx.get(f"{server.url}/gateway/status", headers=bearer(token))
    assert status.json()["auth"]["principal"] == {
        "name": "operator",
        "kind": "session",
        "gates": ["*"],
    }


# -- revocation -------------------------------------------------------------------------------


async def test_patching_an_accounts_password_revokes_its_sessions_only(accounts, store_url):
    async with running_app(accounts()) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        bob = await session(client, "bob", BOB_PW)
        patch = {"auth": {"users": {"alice": {"password_hash": ALICE_NEW_HASH}}}}
        applied = await client.patch("/gateway/config", json=patch, headers=ADMIN)
        assert applied.status_code == 200, await applied.get_data()
        assert "auth.users.alice.password_hash" in (await applied.get_json())["applied_live"]

        assert await whoami(client, alice) == 401
        assert (await whoami(client, bob))["name"] == "bob"
        # The stale session is deleted, not just refused.
        assert [row[0] for row in await session_rows(store_url)] == ["bob"]
        assert (await login(client, "alice", ALICE_PW)).status_code == 401
        fresh = await session(client, "alice", ALICE_NEW_PW)
        assert (await whoami(client, fresh))["name"] == "alice"


async def test_changing_a_secret_password_revokes_that_accounts_sessions(
    accounts, monkeypatch, tmp_path
):
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(tomli_w.dumps({"state_dir": str(state), "auth": accounts_auth()}))
    async with running_app(load_settings(config)) as (_app, client):
        admin = await session(client, "alice", ALICE_PW)
        bob = await session(client, "bob", BOB_PW)
        monkeypatch.setenv(BOB_ENV, "bob's rotated passphrase")
        reloaded = await client.post("/gateway/reload", headers=bearer(admin))
        assert reloaded.status_code == 200, await reloaded.get_data()
        assert await whoami(client, bob) == 401
        assert (await whoami(client, admin))["name"] == "alice"
        assert (await login(client, "bob", BOB_PW)).status_code == 401
        assert (await login(client, "bob", "bob's rotated passphrase")).status_code == 200


async def test_reloading_a_new_hash_from_the_file_revokes_that_accounts_sessions(
    accounts, tmp_path
):
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    data: dict[str, Any] = {"state_dir": str(state), "auth": accounts_auth()}
    config.write_text(tomli_w.dumps(data))
    async with running_app(load_settings(config)) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        bob = await session(client, "bob", BOB_PW)
        data["auth"]["users"]["alice"]["password_hash"] = ALICE_NEW_HASH
        config.write_text(tomli_w.dumps(data))
        reloaded = await client.post("/gateway/reload", headers=bearer(alice))
        assert reloaded.status_code == 200, await reloaded.get_data()
        assert await whoami(client, alice) == 401
        assert (await whoami(client, bob))["name"] == "bob"


async def test_removing_an_account_deletes_its_sessions_at_once(accounts, store_url):
    async with running_app(accounts()) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        carol = {"password_hash": ALICE_NEW_HASH}
        added = await client.patch(
            "/gateway/config", json={"auth": {"users": {"carol": carol}}}, headers=ADMIN
        )
        assert added.status_code == 200, await added.get_data()
        token = await session(client, "carol", ALICE_NEW_PW)
        assert (await whoami(client, token))["name"] == "carol"
        # null removes carol from the overrides file, where the PATCH put her.
        removed = await client.patch(
            "/gateway/config", json={"auth": {"users": {"carol": None}}}, headers=ADMIN
        )
        assert removed.status_code == 200, await removed.get_data()
        assert [row[0] for row in await session_rows(store_url)] == ["alice"]
        assert await whoami(client, token) == 401
        assert (await login(client, "carol", ALICE_NEW_PW)).status_code == 401
        assert (await whoami(client, alice))["name"] == "alice"


async def test_removing_an_account_from_the_file_revokes_it_on_reload(
    accounts, tmp_path, store_url
):
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    data: dict[str, Any] = {"state_dir": str(state), "auth": accounts_auth()}
    data.update(store_section(store_url))
    config.write_text(tomli_w.dumps(data))
    async with running_app(load_settings(config)) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        bob = await session(client, "bob", BOB_PW)
        del data["auth"]["users"]["bob"]
        config.write_text(tomli_w.dumps(data))
        reloaded = await client.post("/gateway/reload", headers=bearer(alice))
        assert reloaded.status_code == 200, await reloaded.get_data()
        assert [row[0] for row in await session_rows(store_url)] == ["alice"]
        assert await whoami(client, bob) == 401


async def test_gates_changed_by_a_patch_apply_to_open_sessions(accounts):
    async with running_app(accounts()) as (_app, client):
        bob = await session(client, "bob", BOB_PW)
        assert (await client.post("/gateway/pause", headers=bearer(bob))).status_code == 403
        patch = {"auth": {"users": {"bob": {"gates": ["allow_gateway_control"]}}}}
        assert (await client.patch("/gateway/config", json=patch, headers=ADMIN)).status_code == 200
        assert (await client.post("/gateway/pause", headers=bearer(bob))).status_code == 200


async def test_switching_the_mode_away_and_back_revives_no_session(accounts, store_url):
    async with running_app(accounts()) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        away = await client.patch(
            "/gateway/config", json={"auth": {"mode": "token"}}, headers=ADMIN
        )
        assert away.status_code == 200, await away.get_data()
        assert await session_rows(store_url) == []
        back = await client.patch(
            "/gateway/config", json={"auth": {"mode": "password-session"}}, headers=ADMIN
        )
        assert back.status_code == 200
        assert await whoami(client, alice) == 401
        assert (await whoami(client, await session(client, "alice", ALICE_PW)))["name"] == "alice"


async def test_a_restart_in_another_mode_revokes_sessions(accounts, make_settings, store_url):
    async with running_app(accounts()) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
    async with running_app(make_settings(auth={"users": accounts_auth()["users"]})):
        pass  # token mode: the start-up deletes every password session
    assert await session_rows(store_url) == []
    async with running_app(accounts()) as (_app, client):
        assert await whoami(client, alice) == 401


async def test_sessions_survive_a_restart_with_the_same_accounts(accounts, store_url):
    async with running_app(accounts()) as (_app, client):
        alice = await session(client, "alice", ALICE_PW)
        bob = await session(client, "bob", BOB_PW)
    async with running_app(accounts()) as (_app, client):
        assert await whoami(client, alice) == {"name": "alice", "kind": "session", "gates": ["*"]}
        assert (await whoami(client, bob))["name"] == "bob"
    assert [row[0] for row in await session_rows(store_url)] == ["alice", "bob"]
    # The fingerprint is an HMAC keyed by the session token: not the hash, not a digest of
    # the password anyone could test guesses against.
    fingerprints = [row[1] for row in await session_rows(store_url)]
    assert all(fp and len(fp) == 64 for fp in fingerprints)
    assert ALICE_HASH.rsplit("$", 1)[1] not in str(fingerprints)


def test_sessions_survive_a_server_restart_but_not_a_new_hash(live_server, tmp_path, store_url):
    config: dict[str, Any] = {
        "state_dir": str(tmp_path / "shared-state"),
        "auth": {"mode": "password-session", "users": {"alice": {"password_hash": ALICE_HASH}}},
    }
    first = live_server(config=config)
    issued = httpx.post(
        f"{first.url}/gateway/auth/session", json={"user": "alice", "password": ALICE_PW}
    )
    assert issued.status_code == 200, first.log()
    token = issued.json()["access_token"]
    assert first.stop() == 0

    second = live_server(config=config)
    status = httpx.get(f"{second.url}/gateway/status", headers=bearer(token))
    assert status.status_code == 200, second.log()
    assert status.json()["auth"]["principal"]["name"] == "alice"
    assert second.stop() == 0

    config["auth"]["users"]["alice"]["password_hash"] = ALICE_NEW_HASH
    third = live_server(config=config)
    assert httpx.get(f"{third.url}/gateway/status", headers=bearer(token)).status_code == 401


OLD_HOST_SCHEMA = [
    """CREATE TABLE schema_migrations (namespace VARCHAR(100) NOT NULL,
      version INTEGER NOT NULL, name VARCHAR(200) NOT NULL,
      applied_ms BIGINT NOT NULL, PRIMARY KEY (namespace, version))""",
    "INSERT INTO schema_migrations VALUES ('host', 1, 'old', 0)",
    """CREATE TABLE gateway_kv (key VARCHAR(200) PRIMARY KEY, value JSON NOT NULL,
      updated_ms BIGINT NOT NULL)""",
    """CREATE TABLE gateway_events (stream VARCHAR(300), seq BIGINT, type VARCHAR(100)
      NOT NULL, ts_ms BIGINT NOT NULL, data JSON NOT NULL, PRIMARY KEY (stream, seq))""",
    """CREATE TABLE gateway_event_streams (stream VARCHAR(300) PRIMARY KEY,
      last_seq BIGINT NOT NULL, updated_ms BIGINT NOT NULL)""",
    """CREATE TABLE gateway_leases (name VARCHAR(300) PRIMARY KEY,
      owner VARCHAR(200) NOT NULL, expires_ms BIGINT NOT NULL)""",
    """CREATE TABLE gateway_once_keys (scope VARCHAR(200), key VARCHAR(300),
      value JSON, created_ms BIGINT NOT NULL, PRIMARY KEY (scope, key))""",
    """CREATE TABLE gateway_auth_sessions (token_hash VARCHAR(64) PRIMARY KEY,
      principal VARCHAR(200) NOT NULL, created_ms BIGINT NOT NULL,
      expires_ms BIGINT NOT NULL, revoked_ms BIGINT, client VARCHAR(200))""",
]


@pytest.mark.empty_store
async def test_sessions_from_before_the_upgrade_are_invalid(accounts, store_url):
    """A store made before accounts existed (no credential fingerprint column): the
    migration adds the column, and the old sessions, whose principal the client chose,
    authenticate no more."""
    token = "gw_sess_an-old-session-token-from-before-the-upgrade"
    digest = hashlib.sha256(token.encode()).hexdigest()
    await db_execute(
        store_url,
        *OLD_HOST_SCHEMA,
        "INSERT INTO gateway_auth_sessions VALUES "
        f"('{digest}', 'alice', 0, 99999999999999, NULL, NULL)",
    )
    async with running_app(accounts()) as (_app, client):
        assert await whoami(client, token) == 401
        assert (await whoami(client, await session(client, "alice", ALICE_PW)))["name"] == "alice"
    assert [row[0] for row in await session_rows(store_url)] == ["alice"]


# -- configuration ----------------------------------------------------------------------------


async def test_config_shows_no_password_hash_digest(accounts):
    async with running_app(accounts()) as (_app, client):
        shown = await (await client.get("/gateway/config", headers=ADMIN)).get_json()
    users = shown["config"]["auth"]["users"]
    digest = ALICE_HASH.rsplit("$", 1)[1]
    assert digest not in str(shown)
    assert users["alice"]["password_hash"].startswith("scrypt$n=32768,r=8,p=1$")
    assert users["alice"]["password_hash"].endswith("$**********")
    assert users["bob"]["password"] == {"env": BOB_ENV}


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ({"mode": "password-session"}, "needs at least one account"),
        (
            {"users": {"al": {"gates": []}}},
            "auth.users.al: Value error, an account needs password or password_hash",
        ),
        (
            {"users": {"al": {"password": "pw-literal", "password_hash": ALICE_HASH}}},
            "not both",
        ),
        ({"users": {"al": {"password_hash": "sha1$abc$def"}}}, "auth.users.al.password_hash"),
        (
            {"users": {"al": {"password_hash": "scrypt$n=1024,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43}}},
            "scrypt n must be a power of two from 16384",
        ),
        ({"users": {"al ice": {"password_hash": ALICE_HASH}}}, "account name 'al ice'"),
        (
            {"password": "legacy-literal", "users": {"operator": {"password_hash": ALICE_HASH}}},
            "keep one of them",
        ),
        ({"login_backoff": {"base_seconds": 10, "max_seconds": 5}}, "max_seconds"),
        ({"login_backoff": {"free_failures": 0}}, "auth.login_backoff.free_failures"),
    ],
)
async def test_invalid_account_settings_are_refused_with_a_clear_message(
    make_settings, auth, expected
):
    with pytest.raises(ConfigError) as info:
        make_settings(auth=auth)
    assert expected in str(info.value)


# -- gateway auth hash-password ----------------------------------------------------------


def hash_password_cli(*, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return gateway_cli("auth", "hash-password", cwd=cwd, stdin=stdin)


def on_a_terminal(args: list[str], answers: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``gateway <args>`` with a pseudo-terminal as its controlling terminal, typing
    each of ``answers`` once a new password prompt has appeared."""
    master, slave = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "host.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=subprocess_env(),
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    output, typed = b"", 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if typed < len(answers) and output.count(b"assword: ") > typed:
                os.write(master, answers[typed].encode() + b"\n")
                typed += 1
        return proc.wait(30), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_hash_password_round_trip_from_stdin_logs_in(make_settings, tmp_path):
    made = hash_password_cli(stdin="a passphrase from a pipe\n", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip()
    assert re.fullmatch(r"scrypt\$n=32768,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", text)
    assert "a passphrase" not in made.stdout + made.stderr
    again = hash_password_cli(stdin="a passphrase from a pipe\n", cwd=tmp_path)
    assert again.stdout.strip() != text  # a fresh salt each time

    (tmp_path / "gateway.toml").write_text(
        tomli_w.dumps(
            {
                "state_dir": "state",
                "auth": {"mode": "password-session", "users": {"dana": {"password_hash": text}}},
            }
        )
    )
    check = gateway_cli("config", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr

    settings = make_settings(
        auth={"mode": "password-session", "users": {"dana": {"password_hash": text}}}
    )
    async with running_app(settings) as (_app, client):
        assert (await login(client, "dana", "a passphrase from a pipe")).status_code == 200
        assert (await login(client, "dana", "a passphrase from a pip")).status_code == 401


def test_hash_password_refuses_an_empty_password(tmp_path):
    empty = hash_password_cli(stdin="\n", cwd=tmp_path)
    assert empty.returncode == 1
    assert empty.stdout == ""
    assert "Error: the password is empty" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_hash_password_on_a_terminal_asks_twice_without_echo(tmp_path):
    code, output = on_a_terminal(
        ["auth", "hash-password"], ["typed on a terminal", "typed on a terminal"], tmp_path
    )
    assert code == 0, output
    assert "Password: " in output and "Repeat password: " in output
    assert "typed on a terminal" not in output  # never echoed
    made = re.search(r"scrypt\$\S+", output)
    assert made is not None, output
    assert PasswordHash.parse(made.group(0)).verify("typed on a terminal")


def test_hash_password_on_a_terminal_refuses_two_different_answers(tmp_path):
    code, output = on_a_terminal(
        ["auth", "hash-password"], ["first answer", "second one"], tmp_path
    )
    assert code == 1, output
    assert "the passwords do not match" in output
    assert "scrypt$" not in output


def test_config_check_names_a_broken_password_hash(tmp_path):
    (tmp_path / "gateway.toml").write_text(
        '[auth]\nmode = "password-session"\n[auth.users.dana]\npassword_hash = "md5$x"\n'
    )
    check = gateway_cli("config", "check", cwd=tmp_path)
    assert check.returncode == 1
    assert "auth.users.dana.password_hash" in check.stderr
    assert "gateway auth hash-password" in check.stderr
    assert "Traceback" not in check.stderr


def test_config_check_warns_about_a_literal_account_password(tmp_path):
    (tmp_path / "gateway.toml").write_text(
        '[auth]\nmode = "password-session"\n[auth.users.dana]\npassword = "dana-literal"\n'
    )
    check = gateway_cli("config", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "warning: auth.users.dana.password is a literal" in check.stderr
    assert "dana-literal" not in check.stderr + check.stdout
