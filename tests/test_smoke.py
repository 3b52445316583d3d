"""The first thing a newcomer does: the gateway answers /health and knows its admin."""

from __future__ import annotations

from tests.conftest import ADMIN


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


def test_serve_with_no_config_generates_and_keeps_an_admin_token(tmp_path):
    import subprocess
    import sys

    import httpx

    from tests.conftest import free_port

    port = free_port()
    args = [sys.executable, "-m", "host.cli", "serve", "--bind", f"127.0.0.1:{port}"]
    log1 = tmp_path / "first.log"
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=log1.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait(port, proc, log1)
        token = (tmp_path / ".gateway" / "admin-token").read_text().strip()
        assert token in log1.read_text()  # printed once, on first start
        r = httpx.get(
            f"http://127.0.0.1:{port}/gateway/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    log2 = tmp_path / "second.log"
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=log2.open("wb"), stderr=subprocess.STDOUT)
    try:
        _wait(port, proc, log2)
        assert token not in log2.read_text()
        assert "admin-token" in log2.read_text()
        r = httpx.get(
            f"http://127.0.0.1:{port}/gateway/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def _wait(port, proc, log):
    import time

    import httpx

    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(log.read_text())
