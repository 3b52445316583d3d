"""``gateway db upgrade`` and ``gateway db check``, run as a user would (a subprocess in
a scratch folder), on SQLite and on PostgreSQL: what they print, their exit codes, and
that no database password ever shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from host.storage import Store
from host.storage.migrations import HOST_MIGRATIONS
from tests.conftest import base_config, db_rows, free_port, gateway_cli

URL_ENV = "GATEWAY_TEST_DATABASE_URL"


def write_config(tmp_path: Path, store_url: str) -> tuple[Path, dict[str, str]]:
    """A config on the test's store; a PostgreSQL URL goes through ``{ env = ... }``."""
    data = base_config(tmp_path / "state")
    env = {}
    if store_url.startswith("postgresql"):
        data["storage"] = {"url": {"env": URL_ENV}}
        env[URL_ENV] = store_url
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(data))
    return path, env


@pytest.mark.empty_store
async def test_db_check_reports_pending_migrations_and_db_upgrade_applies_them(tmp_path, store_url):
    path, env = write_config(tmp_path, store_url)
    config = ["--config", str(path)]
    host = [f"host#{m.version}" for m in HOST_MIGRATIONS]

    fresh = gateway_cli("db", "check", *config, "--json", cwd=tmp_path, **env)
    assert fresh.returncode == 1, fresh.stderr
    report = json.loads(fresh.stdout)
    assert report["up_to_date"] is False and report["unknown"] == []
    assert report["pending"][: len(host)] == host
    assert any(p.startswith("pipelines#") for p in report["pending"])  # enabled plugins' too
    if store_url.startswith("sqlite"):
        assert not (tmp_path / "state" / "gateway.db").exists()  # checking created nothing

    upgraded = gateway_cli("db", "upgrade", *config, cwd=tmp_path, **env)
    assert upgraded.returncode == 0, upgraded.stderr
    lines = upgraded.stdout.splitlines()
    assert lines[0].startswith("applied host#1: ")
    assert lines[-1] == f"{len(report['pending'])} migrations applied"
    applied = await db_rows(store_url, "SELECT namespace, version FROM schema_migrations")
    assert sorted(f"{ns}#{v}" for ns, v in applied) == sorted(report["pending"])

    current = gateway_cli("db", "check", *config, cwd=tmp_path, **env)
    assert current.returncode == 0, current.stderr
    assert current.stdout.startswith("the store is up to date (")
    again = gateway_cli("db", "upgrade", *config, cwd=tmp_path, **env)
    assert (again.returncode, again.stdout.strip()) == (0, "the store is up to date")

    # A migration this gateway does not know: the store was upgraded by a newer one.
    store = Store(store_url)
    await store.open()
    async with store.write() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO schema_migrations (namespace, version, name, applied_ms) "
            "VALUES ('host', 999, 'from the future', 0)"
        )
    await store.close()
    newer = gateway_cli("db", "check", *config, cwd=tmp_path, **env)
    assert newer.returncode == 1
    assert "unknown host#999: applied by a newer gateway or a plugin not loaded" in newer.stdout
    if store_url.startswith("postgresql"):
        password = store_url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
        for result in (fresh, upgraded, current, again, newer):
            assert password not in result.stdout + result.stderr


def test_db_commands_that_cannot_reach_the_store_say_so_without_the_password(tmp_path):
    secret = "never-shown-pw-0123"
    url = f"postgresql+asyncpg://gw:{secret}@127.0.0.1:{free_port()}/gw"
    path, env = write_config(tmp_path, url)

    check = gateway_cli("db", "check", "--config", str(path), cwd=tmp_path, **env)
    assert check.returncode == 2
    assert check.stderr.startswith("error: cannot check the store at postgresql+asyncpg://gw:***@")
    upgrade = gateway_cli("db", "upgrade", "--config", str(path), cwd=tmp_path, **env)
    assert upgrade.returncode == 1
    assert "cannot upgrade the store at postgresql+asyncpg://gw:***@127.0.0.1" in upgrade.stderr
    for result in (check, upgrade):
        assert secret not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


def test_db_check_with_a_broken_config_exits_2(tmp_path):
    path = tmp_path / "gateway.toml"
    path.write_text('[storage]\nurl = "mysql://gw:pw-0123@db/gw"\n')
    result = gateway_cli("db", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "'mysql' is not a supported store" in result.stderr
    assert "pw-0123" not in result.stderr
