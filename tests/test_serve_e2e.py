"""End to end against a real ``gateway serve`` process: HTTP/1.1 and HTTP/2 on one port
(h2c prior knowledge, and TLS with ALPN), SSE over HTTP/2, and a graceful SIGTERM that
ends open streams with a last event, refuses new work while draining and exits 0."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.conftest import ADMIN, LiveServer

TIMEOUT = 15


def h2_client(server: LiveServer, **kwargs: Any) -> httpx.AsyncClient:
    """HTTP/2 only: prior knowledge on http:// URLs, ALPN "h2" on https:// ones."""
    return httpx.AsyncClient(
        http1=False, http2=True, base_url=server.url, headers=ADMIN, timeout=TIMEOUT, **kwargs
    )


def h1_client(server: LiveServer, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=TIMEOUT, **kwargs)


def client_for(kind: str, server: LiveServer) -> httpx.AsyncClient:
    return h2_client(server) if kind == "h2" else h1_client(server)


async def sse_blocks(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """Each SSE block as its fields; comment lines are collected under ``comment``."""
    fields: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            fields.setdefault("comment", []).append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    if fields:
        yield fields


async def next_event(blocks: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """The next block that carries data (the preamble and heartbeats are skipped)."""
    while True:
        block = await asyncio.wait_for(anext(blocks), TIMEOUT)
        if "data" in block:
            return block


async def rest_of(blocks: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything until the server ends the stream."""

    async def collect() -> list[dict[str, Any]]:
        return [b async for b in blocks if "data" in b]

    return await asyncio.wait_for(collect(), TIMEOUT)


def exit_code(server: LiveServer, within: float) -> int:
    """The server's exit status after a signal already sent; raises if it does not exit
    within ``within`` seconds."""
    return server.proc.wait(within)


def sigterm_exit_code(server: LiveServer, within: float = 30) -> int:
    return server.stop(signal.SIGTERM, within)


def assert_clean_log(server: LiveServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log
    assert "[ERROR]" not in log, log


# -- protocols on one port -------------------------------------------------------------------


async def test_http2_prior_knowledge_and_http11_are_served_on_one_cleartext_port(live_server):
    server = live_server()
    async with h2_client(server) as h2, h1_client(server) as h1:
        r2 = await h2.get("/gateway/status")
        r1 = await h1.get("/gateway/status")
        health2 = await h2.get("/health")
    assert (r2.http_version, r2.status_code) == ("HTTP/2", 200)
    assert (r1.http_version, r1.status_code) == ("HTTP/1.1", 200)
    assert r2.json()["state"] == r1.json()["state"] == "running"
    assert (health2.http_version, health2.json()) == ("HTTP/2", {"status": "ok"})
    assert sigterm_exit_code(server) == 0
    assert_clean_log(server)


@pytest.fixture
def tls(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(certfile)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(certfile, append=True)
    cert.private_key_pem.write_to_path(keyfile)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    ca_pem = ca.cert_pem.bytes().decode()
    return {"certfile": certfile, "keyfile": keyfile, "trust": trust, "ca_pem": ca_pem}


def tls_server(live_server: Any, tls: dict[str, Any]) -> LiveServer:
    return live_server(
        args=["--certfile", str(tls["certfile"]), "--keyfile", str(tls["keyfile"])],
        scheme="https",
        verify=tls["trust"],
    )


async def test_tls_negotiates_http2_by_alpn_and_still_serves_http11(live_server, tls):
    server = tls_server(live_server, tls)
    async with (
        h2_client(server, verify=tls["trust"]) as h2,
        h1_client(server, verify=tls["trust"]) as h1,
    ):
        r2 = await h2.get("/gateway/status")
        r1 = await h1.get("/gateway/status")
    assert (r2.http_version, r2.status_code) == ("HTTP/2", 200)
    assert (r1.http_version, r1.status_code) == ("HTTP/1.1", 200)

    # What the server picks by ALPN, seen from a plain TLS socket.
    port = int(server.url.rpartition(":")[2])
    for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")):
        ctx = ssl.create_default_context(cadata=tls["ca_pem"])
        ctx.set_alpn_protocols(offered)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            assert conn.selected_alpn_protocol() == chosen
    assert sigterm_exit_code(server) == 0
    assert_clean_log(server)


async def test_tls_port_refuses_an_unverified_certificate(live_server, tls):
    server = tls_server(live_server, tls)
    async with h1_client(server) as untrusting:  # default trust store: not our CA
        with pytest.raises(httpx.ConnectError):
            await untrusting.get("/health")
    assert sigterm_exit_code(server) == 0


async def test_http2_posts_answered_before_their_body_frame_arrives_keep_the_log_clean(
    live_server,
):
    server = live_server()
    codes = []
    # A fresh HTTP/2 connection per request: an empty POST's end-of-stream frame often
    # arrives after the (immediate) answer, which Hypercorn alone turns into a KeyError
    # that kills the connection.
    for _ in range(40):
        async with h2_client(server) as h2:
            response = await h2.post("/gateway/pause")
            assert response.http_version == "HTTP/2"
            codes.append(response.status_code)
    assert codes == [200] + [409] * 39
    assert sigterm_exit_code(server) == 0
    assert_clean_log(server)
    assert "Unhandled exception" not in server.log()


# -- SSE over HTTP/2 -------------------------------------------------------------------------


async def test_sse_over_http2_streams_live_events_made_on_another_connection(
    live_server, store_url
):
    server = live_server()
    async with h2_client(server) as h2, h1_client(server) as other:
        async with h2.stream("GET", "/gateway/events") as response:
            assert response.http_version == "HTTP/2"
            assert response.headers["content-type"].startswith("text/event-stream")
            blocks = sse_blocks(response)
            preamble = await asyncio.wait_for(anext(blocks), TIMEOUT)
            assert preamble["retry"] == "2000"
            assert (await other.post("/gateway/pause")).status_code == 200
            paused = await next_event(blocks)
            assert (await other.post("/gateway/resume")).status_code == 200
            resumed = await next_event(blocks)
        # Resume on a fresh stream of the same HTTP/2 connection: nothing is repeated.
        assert (await other.post("/gateway/pause")).status_code == 200
        async with h2.stream(
            "GET", "/gateway/events", headers={"Last-Event-ID": resumed["id"]}
        ) as response:
            again = await next_event(sse_blocks(response))
    assert (paused["id"], paused["event"]) == ("1", "gateway.paused")
    assert (resumed["id"], resumed["event"]) == ("2", "gateway.resumed")
    assert json.loads(resumed["data"])["data"]["paused"] is False
    assert (again["id"], again["event"]) == ("3", "gateway.paused")
    assert sigterm_exit_code(server) == 0
    assert_clean_log(server)


# -- graceful shutdown -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["h1", "h2"])
async def test_sigterm_ends_open_streams_with_a_closing_event_and_exits_0(live_server, kind):
    graceful = 20
    server = live_server(config={"server": {"graceful_timeout_seconds": graceful}})
    async with client_for(kind, server) as streams, h1_client(server) as other:
        async with (
            streams.stream("GET", "/gateway/events") as sse,
            streams.stream(
                "GET", "/gateway/events", headers={"Accept": "application/x-ndjson"}
            ) as jsonl,
        ):
            assert (
                sse.http_version == jsonl.http_version == {"h1": "HTTP/1.1", "h2": "HTTP/2"}[kind]
            )
            blocks = sse_blocks(sse)
            lines = jsonl.aiter_lines()
            assert (await other.post("/gateway/pause")).status_code == 200
            first = await next_event(blocks)
            first_line = json.loads(await asyncio.wait_for(anext(lines), TIMEOUT))
            assert first["id"] == "1" and first_line["seq"] == 1

            server.proc.send_signal(signal.SIGTERM)
            # Both streams end by themselves, cleanly (no protocol error), with a last event.
            sse_rest = await rest_of(blocks)
            jsonl_rest = [json.loads(x) async for x in lines if x]
    assert [b["event"] for b in sse_rest] == ["stream.closing"]
    assert "id" not in sse_rest[0]  # not a stored event: a resume id stays the last real one
    assert json.loads(sse_rest[0]["data"])["type"] == "stream.closing"
    assert [x["type"] for x in jsonl_rest] == ["stream.closing"]
    assert exit_code(server, graceful) == 0
    assert_clean_log(server)


def _in_flight(server: LiveServer) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=TIMEOUT).text
    match = re.search(r"^gateway_http_requests_in_flight (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


async def test_requests_arriving_while_draining_get_503_and_in_flight_ones_finish(live_server):
    graceful = 20
    server = live_server(config={"server": {"graceful_timeout_seconds": graceful}})
    port = int(server.url.rpartition(":")[2])
    body = json.dumps({"events": {"heartbeat_seconds": 30}}).encode()
    head = (
        "PATCH /gateway/config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {ADMIN['Authorization']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as slow:
        # A request whose body is still arriving: it is in flight when SIGTERM comes.
        slow.sendall(head + body[:5])
        await until(lambda: _in_flight(server) >= 2)  # it, and this /metrics request
        server.proc.send_signal(signal.SIGTERM)
        await until(lambda: httpx.get(f"{server.url}/health").status_code == 503)
        health = httpx.get(f"{server.url}/health")
        refused = httpx.get(f"{server.url}/gateway/status", headers=ADMIN)
        slow.sendall(body[5:])
        answer = _read_http_response(slow)
    assert health.json() == {"status": "draining"}
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json()["error"]["code"] == "draining"
    assert refused.json()["error"]["type"] == "server_error"
    # The in-flight request was allowed to finish normally.
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert exit_code(server, graceful) == 0
    assert_clean_log(server)


async def until(predicate: Any, timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def _read_http_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("kind", ["h1", "h2"])
async def test_a_stream_client_that_just_left_does_not_hold_up_shutdown(live_server, kind):
    graceful = 20
    server = live_server(config={"server": {"graceful_timeout_seconds": graceful}})
    async with h1_client(server) as other:
        async with client_for(kind, server) as streams:
            async with streams.stream("GET", "/gateway/events") as response:
                blocks = sse_blocks(response)
                assert (await other.post("/gateway/pause")).status_code == 200
                assert (await next_event(blocks))["id"] == "1"
        # The client is gone; its stream's end and the drain now race on the server.
        server.proc.send_signal(signal.SIGTERM)
    # Exits as soon as the drain is done, not at the end of Hypercorn's graceful timeout
    # (which would cancel the stuck connection and log a traceback).
    assert exit_code(server, graceful) == 0
    assert_clean_log(server)


async def test_sigterm_says_goodbye_on_open_websockets_and_exits_0(live_server):
    from websockets.asyncio.client import connect

    server = live_server(config={"events": {"heartbeat_seconds": 30}})
    ws_url = server.url.replace("http://", "ws://") + "/gateway/ws"
    async with connect(ws_url, additional_headers=ADMIN) as ws:
        request = {
            "schema_version": 1,
            "request_id": "r1",
            "kind": "capabilities.request",
            "payload": {},
        }
        await ws.send(json.dumps(request))
        answer = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert answer["kind"] == "capabilities.response"
        server.proc.send_signal(signal.SIGTERM)
        goodbye = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert goodbye["kind"] == "gateway.closing"
        assert goodbye["payload"] == {"reason": "draining"}
    assert exit_code(server, 30) == 0
    assert_clean_log(server)


async def test_a_websocket_upgrade_without_credentials_is_refused_by_the_real_server(live_server):
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    server = live_server()
    ws_url = server.url.replace("http://", "ws://") + "/gateway/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url):
            pass
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"
