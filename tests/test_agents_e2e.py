"""End to end through ``gateway serve``: the bridge's queued follow-ups survive a killed
gateway and are drained once by the next one; a gateway stopped with SIGTERM leaves no
agent process behind. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent_helpers import agent_config
from tests.conftest import LiveServer

BASE = "/gateway/external-coding-agent"

pytestmark = pytest.mark.usefixtures("store_url")


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "shared-state"),
        "agents": {"echo": agent_config(tmp_path)},
    }


def call(server: LiveServer, method: str, path: str, body: Any = None) -> Any:
    response = httpx.request(
        method, f"{server.url}{path}", json=body, headers=server.headers, timeout=60
    )
    assert response.status_code < 300, response.text
    return response.json()


def test_followups_survive_a_killed_gateway_and_are_drained_once(live_server, tmp_path):
    first = live_server(config=config(tmp_path))
    sid = call(first, "POST", f"{BASE}/sessions", {"workspace": "/src"})["session_id"]
    for n in range(3):
        call(first, "POST", f"{BASE}/sessions/{sid}/followups", {"text": f"task {n}"})
    handed = call(first, "POST", f"{BASE}/sessions/{sid}/followups/drain", {"limit": 1})
    assert [f["text"] for f in handed["followups"]] == ["task 0"]
    first.stop(signal.SIGKILL)
    second = live_server(config=config(tmp_path))
    rest = call(second, "POST", f"{BASE}/sessions/{sid}/followups/drain", {})
    assert [f["text"] for f in rest["followups"]] == ["task 1", "task 2"]
    assert call(second, "POST", f"{BASE}/sessions/{sid}/followups/drain", {})["followups"] == []
    page = call(second, "GET", f"{BASE}/sessions/{sid}/stream?format=json&limit=100")
    assert [e["type"] for e in page["events"]].count("followup.queued") == 3


def test_sigterm_stops_every_agent_process(live_server, tmp_path):
    server = live_server(config=config(tmp_path))
    pids = []
    for n in range(2):
        session = call(server, "POST", "/sessions", {"agent": "echo", "workspace": f"w{n}"})
        page = call(server, "GET", f"/sessions/{session['id']}/events?format=json")
        pids.append(page["events"][0]["data"]["pid"])
    assert all(running(pid) for pid in pids)
    assert server.stop(signal.SIGTERM) == 0, server.log()
    assert not any(running(pid) for pid in pids), server.log()
