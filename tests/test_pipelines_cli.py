"""The pipelines CLI commands, run as a user would (subprocesses) against a real
``gateway serve`` process over HTTP."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, LiveServer, gateway_cli
from tests.pipelines_fixtures import PIPELINES_SOURCE


def gateway(server: LiveServer, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return gateway_cli(*args, cwd=cwd, GATEWAY_URL=server.url, GATEWAY_TOKEN=ADMIN_TOKEN)


def test_cli_runs_pipelines_and_exit_codes_tell_the_outcome(live_server, tmp_path):
    # SQLite only: the CLI speaks HTTP alone; the store behind the API runs on both in
    # test_pipelines_api.py.
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "testing.py").write_text(PIPELINES_SOURCE)
    server = live_server(
        config={"plugins": {"pipelines": {"directory": str(pipelines), "poll_seconds": 0.1}}}
    )
    cwd = tmp_path / "cli"
    cwd.mkdir()

    listed = gateway(server, cwd, "pipelines", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "VERSION", "STEPS"]
    assert any(line.startswith("three ") for line in listed.stdout.splitlines())

    done = gateway(server, cwd, "run", "three", "--input", '{"n": 2}', "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {"v": 7}

    failed = gateway(server, cwd, "run", "failing")
    assert failed.returncode == 1 and "broken on purpose" in failed.stderr

    waiting = gateway(server, cwd, "run", "gated", "--follow")
    assert waiting.returncode == 3, waiting.stderr
    assert "approval.requested" in waiting.stdout and "run.waiting" in waiting.stdout
    run_id = waiting.stdout.splitlines()[0].split()[1]

    pending = gateway(server, cwd, "approvals", "list", "--json")
    assert [a["run_id"] for a in json.loads(pending.stdout)["approvals"]] == [run_id]
    approved = gateway(server, cwd, "approvals", "approve", run_id, "--reason", "ok")
    assert approved.returncode == 0, approved.stderr
    events = gateway(server, cwd, "runs", "events", run_id, "--follow", "--json")
    assert json.loads(events.stdout.splitlines()[-1])["type"] == "run.completed"

    bad = gateway(server, cwd, "run", "three", "--input", '{"n": -1}')
    assert bad.returncode == 1 and "422 validation_failed" in bad.stderr
    missing = gateway(server, cwd, "runs", "show", "nope")
    assert missing.returncode == 1 and "404 run_not_found" in missing.stderr

    added = gateway(
        server,
        cwd,
        "schedules",
        "add",
        "three",
        "--every",
        "3600",
        "--id",
        "h",
        "--input",
        '{"n": 1}',
        "--json",
    )
    assert added.returncode == 0 and json.loads(added.stdout)["id"] == "h"
    fired = gateway(server, cwd, "triggers", "fire", "schedule:h", "--json")
    assert json.loads(fired.stdout)["outcome"] == "fired"
    assert gateway(server, cwd, "schedules", "rm", "h").returncode == 0

    assert gateway(server, cwd, "debug", "add", "two").returncode == 0
    paused = gateway(server, cwd, "run", "three", "--input", '{"n": 1}', "--json")
    assert paused.returncode == 4
    paused_id = json.loads(paused.stdout)["id"]
    assert paused_id in gateway(server, cwd, "debug", "runs").stdout
    assert gateway(server, cwd, "debug", "release", paused_id).returncode == 0
    assert gateway(server, cwd, "debug", "rm", "two").returncode == 0
