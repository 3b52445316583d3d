"""Tool approvals on real ``gateway serve`` processes: a pipeline's ``tool`` step calling the
built-in ``http_fetch`` (``[tools.approval] always``) parks its run, the approval is in
``GET /approvals`` and ``gateway approvals list``, the gateway restarts, the CLI approves
it, and the fetch runs exactly once (counted by the loopback server). On both stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, gateway_cli
from tests.pipelines_fixtures import write_pipelines

pytestmark = pytest.mark.usefixtures("store_url")

SOURCE = """
from plugins.pipelines.definition import Pipeline, tool

FETCH = Pipeline(id="fetch", steps=[tool("get", "http_fetch", lambda c: c.input)])
"""


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Counter.hits.append(self.path)
        body = b"fetched once"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def counter() -> Iterator[str]:
    _Counter.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def poll(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def cli(server: Any, *args: str, cwd: Path) -> Any:
    return gateway_cli(*args, cwd=cwd, GATEWAY_URL=server.url, GATEWAY_TOKEN=ADMIN_TOKEN)


def test_a_held_tool_step_survives_a_restart_and_the_cli_approval_runs_it_once(
    live_server, tmp_path, counter
):
    directory = write_pipelines(tmp_path, "fetch", SOURCE)
    config = {
        "state_dir": str(tmp_path / "shared-state"),
        "plugins": {
            "pipelines": {"directory": str(directory), "poll_seconds": 0.1},
            "tools": {"http_fetch": {"allowed_hosts": ["127.0.0.1"]}},
        },
        "tools": {"approval": {"always": ["http_fetch"]}},
    }
    first = live_server(config=config)
    url = f"{counter}/deploy"
    started = httpx.post(
        f"{first.url}/pipelines/fetch/start",
        json={"input": {"url": url}},
        headers=first.headers,
        timeout=10,
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["runId"]

    def waiting(server: Any) -> Any:
        record = httpx.get(f"{server.url}/runs/{run_id}", headers=server.headers, timeout=10)
        body = record.json()
        return body if body["status"] == "waiting" else None

    record = poll(lambda: waiting(first), "the run to wait for the tool approval")
    assert record["waiting_for"]["type"] == "tool_approval"
    approval_id = record["waiting_for"]["approval_id"]
    listed = httpx.get(f"{first.url}/approvals", headers=first.headers, timeout=10).json()
    [approval] = [a for a in listed["approvals"] if a["id"] == approval_id]
    assert approval["source"] == "tool_call" and approval["subject"] == "http_fetch"
    assert approval["run_id"] == run_id and approval["details"]["args"] == {"url": url}
    assert first.stop() == 0
    assert _Counter.hits == []

    second = live_server(config=config)
    assert waiting(second) is not None  # still parked after the restart
    pending = cli(second, "approvals", "list", cwd=tmp_path)
    assert pending.returncode == 0, pending.stderr
    assert approval_id in pending.stdout
    approved = cli(second, "approvals", "approve", approval_id, "--reason", "ok", cwd=tmp_path)
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout

    def finished() -> Any:
        body = httpx.get(f"{second.url}/runs/{run_id}", headers=second.headers, timeout=10).json()
        return body if body["status"] in ("completed", "failed") else None

    done = poll(finished, "the run to finish")
    assert done["status"] == "completed", done
    assert done["output"]["status"] == 200
    assert _Counter.hits == ["/deploy"]
    # Deciding it again is refused; the fetch is not repeated.
    again = cli(second, "approvals", "approve", approval_id, cwd=tmp_path)
    assert again.returncode != 0 and "approval_not_pending" in again.stdout + again.stderr
    assert _Counter.hits == ["/deploy"]
