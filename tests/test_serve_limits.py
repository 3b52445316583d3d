"""A real ``gateway serve``: a port already in use is one clear line and a non-zero exit
(one worker or several), the per-worker connection cap holds and frees up again, and the
Host check applies to HTTP/2's ``:authority`` as to HTTP/1.1's ``Host``."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer

# Guards against a hung test, not timing assertions.
GUARD_SECONDS = 15
DEADLINE_SECONDS = 30


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serving_on_a_port_in_use_is_one_clear_line_and_a_non_zero_exit(live_server, workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = live_server(
            config={"server": {"bind": f"127.0.0.1:{port}"}},
            args=["--workers", workers],
            wait=False,
        )
        code = server.proc.wait(60)
    log = server.log()
    assert code == 1, log
    assert f"gateway: cannot bind 127.0.0.1:{port}: address already in use" in log.splitlines()
    assert "Traceback" not in log
    assert "listening on" not in log  # refused before the banner


def _connect(server: LiveServer) -> socket.socket:
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    return socket.create_connection((host, int(port)), timeout=GUARD_SECONDS)


def _first_answer(sock: socket.socket, request: bytes) -> bytes:
    """What the server sends first for ``request``; b"" if it closed the connection."""
    try:
        sock.sendall(request)
        return sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return b""


STREAM = (
    b"GET /gateway/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
    b"Accept: text/event-stream\r\n\r\n"
)
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _hold_stream(server: LiveServer) -> socket.socket:
    """An open event stream (one connection the worker holds). Retried until the
    connections of the start-up health checks are counted out."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        sock = _connect(server)
        if _first_answer(sock, STREAM).startswith(b"HTTP/1.1 200"):
            return sock
        sock.close()
        assert time.monotonic() < deadline, "could not open a stream"
        time.sleep(0.05)


def test_the_connection_cap_holds_and_frees_up_when_a_connection_closes(live_server):
    server = live_server(
        config={"server": {"max_connections": 2}, "events": {"heartbeat_seconds": 1}}
    )
    held = [_hold_stream(server), _hold_stream(server)]
    try:
        for _ in range(3):
            extra = _connect(server)
            answer = _first_answer(extra, HEALTH)
            extra.close()
            assert answer == b"", answer  # closed at once, without a response
        # The held streams are still served: their heartbeats keep coming.
        assert b"heartbeat" in held[0].recv(4096) + held[0].recv(4096)
    finally:
        held[0].close()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        sock = _connect(server)
        answer = _first_answer(sock, HEALTH)
        sock.close()
        if answer.startswith(b"HTTP/1.1 200"):
            break
        assert time.monotonic() < deadline, "the freed connection was never counted out"
        time.sleep(0.05)
    held[1].close()
    assert "server.max_connections" in server.log()


async def test_a_rebound_host_is_refused_over_http11_and_http2(live_server):
    server = live_server(config={"auth": {"mode": "localhost-dev"}})
    port = server.url.rpartition(":")[2]
    for http2 in (False, True):
        async with httpx.AsyncClient(
            http1=not http2, http2=http2, base_url=server.url, timeout=GUARD_SECONDS
        ) as client:
            rebound = await client.post("/gateway/pause", headers={"Host": f"evil.example:{port}"})
            assert rebound.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert rebound.status_code == 403
            assert rebound.json()["error"]["code"] == "host_not_allowed"
            status = await client.get("/gateway/status", headers={"Host": f"localhost:{port}"})
            assert status.status_code == 200
            assert status.json()["state"] == "running"
