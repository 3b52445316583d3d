"""Only the gateway's own user may read its state (finding 8 of issue 9): after a real
``gateway serve`` under the usual umask (022), the state directory is 0700 and the
SQLite database with its ``-wal`` and ``-shm``, the generated admin token and the
overrides file are 0600. An existing state directory open to others is left alone with
a warning; the database files of an older store are tightened.

SQLite only by nature: it checks the modes of the database files in the state
directory (a PostgreSQL store has none there)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w

from tests.conftest import LiveServer, free_port, wait_healthy

STATE_FILES = ("gateway.db", "gateway.db-wal", "gateway.db-shm", "admin-token")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], LiveServer]]:
    servers: list[LiveServer] = []

    def start(state: Path) -> LiveServer:
        port = free_port()
        config = tmp_path / "gateway.toml"
        config.write_text(
            tomli_w.dumps(
                {
                    "state_dir": str(state),
                    "server": {"bind": f"127.0.0.1:{port}", "graceful_timeout_seconds": 5},
                }
            )
        )
        log = tmp_path / "server.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "serve", "--config", str(config)],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
            preexec_fn=lambda: os.umask(0o022),  # the usual umask, whatever this one is
        )
        server = LiveServer(proc, f"http://127.0.0.1:{port}", config, state, log)
        servers.append(server)
        wait_healthy(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


def test_a_real_start_makes_the_state_directory_0700_and_its_files_0600(tmp_path, serve):
    state = tmp_path / "state"
    server = serve(state)
    token = (state / "admin-token").read_text().strip()
    patched = httpx.patch(
        f"{server.url}/gateway/config",
        json={"events": {"heartbeat_seconds": 5}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    # The store is open and in WAL mode: its -wal and -shm exist while it runs.
    modes = {name: mode(state / name) for name in (*STATE_FILES, "config.overrides.toml")}
    assert mode(state) == 0o700
    assert modes == dict.fromkeys(modes, 0o600), {k: f"{v:o}" for k, v in modes.items()}
    assert server.stop() == 0
    assert "warning: state directory" not in server.log()


def test_an_open_state_directory_is_warned_about_and_an_old_database_tightened(tmp_path, serve):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    with sqlite3.connect(state / "gateway.db") as db:
        db.execute("CREATE TABLE older (x INTEGER)")
    os.chmod(state / "gateway.db", 0o644)
    server = serve(state)
    assert mode(state / "gateway.db") == 0o600
    assert mode(state / "gateway.db-wal") == 0o600
    assert mode(state) == 0o755  # the operator's directory, left as it was made
    server.stop()
    assert f"warning: state directory {state} is open to other users (mode 755)" in server.log()
