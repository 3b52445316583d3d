"""The first thing a newcomer does: start with no config, curl /health, use the token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN, free_port


async def test_health_is_public_and_ok(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}


async def test_status_requires_auth_and_reports_the_principal(client):
    denied = await client.get("/gateway/status")
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"].startswith("Bearer")
    ok = await client.get("/gateway/status", headers=ADMIN)
    assert ok.status_code == 200
    body = await ok.get_json()
    assert body["state"] == "running"
    assert body["auth"]["principal"]["name"] == "admin"
    assert any(p["name"] == "control" for p in body["plugins"])


def _serve_once(tmp_path: Path, port: int, log: Path, token: str | None) -> str:
    """Start ``gateway serve`` with no config in ``tmp_path``, check the admin token works,
    stop it with SIGTERM (exit 0); returns the log."""
    args = [sys.executable, "-m", "host.cli", "serve", "--bind", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, proc, log)
        token = token or (tmp_path / ".gateway" / "admin-token").read_text().strip()
        r = httpx.get(
            f"http://127.0.0.1:{port}/gateway/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    return log.read_text()


def test_serve_with_no_config_generates_and_keeps_an_admin_token(tmp_path):
    port = free_port()
    first = _serve_once(tmp_path, port, tmp_path / "first.log", None)
    token = (tmp_path / ".gateway" / "admin-token").read_text().strip()
    assert token in first  # printed once, on first start
    second = _serve_once(tmp_path, port, tmp_path / "second.log", token)
    assert token not in second
    assert "admin-token" in second


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(log.read_text())
