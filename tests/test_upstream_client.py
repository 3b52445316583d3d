"""The gateway's HTTP/1.1 client for model upstreams (providers/http1.py), against real
servers on loopback (tests/scripted_server.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from plugins.openai_compat.providers.http1 import (
    ConnectFailed,
    ConnectionBroken,
    Http1Pool,
    Origin,
    UpstreamTimeout,
)
from tests.fake_openai_upstream import closed_port
from tests.scripted_server import (
    CLOSE_WAIT,
    ESTABLISHED,
    ScriptedServer,
    fixed,
    held_until,
    sockets_to,
    until,
)


def pool_for(server: ScriptedServer, scheme: str = "http", **options: object) -> Http1Pool:
    origin, _ = Origin.parse(f"{scheme}://127.0.0.1:{server.port}/v1")
    settings: dict[str, object] = {"connect_timeout": 2.0, "read_timeout": 2.0, **options}
    return Http1Pool(origin, **settings)  # type: ignore[arg-type]


async def post(pool: Http1Pool, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await pool.request("POST", "/v1/chat/completions", [], body)
    return response.status, await response.read()


@pytest.mark.parametrize("chunked", [False, True])
async def test_sequential_requests_share_one_keep_alive_connection(chunked):
    async with ScriptedServer(fixed(b'{"ok": true}', chunked=chunked)) as server:
        pool = pool_for(server)
        answers = [await post(pool, b'{"n": %d}' % n) for n in range(3)]
        await pool.aclose()
    assert answers == [(200, b'{"ok": true}')] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}".encode() in first.lower()
    assert first.endswith(b'{"n": 0}')


async def test_the_body_streams_as_it_arrives():
    release = asyncio.Event()

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with ScriptedServer(answer) as server:
        pool = pool_for(server)
        response = await pool.request("POST", "/v1/x", [], b"{}")
        parts = response.aiter_bytes()
        assert await anext(parts) == b"first"  # before the server sent the rest
        release.set()
        assert [part async for part in parts] == [b"second"]
        assert pool.open_connections == 1
        await pool.aclose()


async def test_a_response_closed_before_its_end_closes_its_connection():
    release = asyncio.Event()

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        return False

    async with ScriptedServer(answer) as server:
        pool = pool_for(server)
        response = await pool.request("POST", "/v1/x", [], b"{}")
        assert await anext(response.aiter_bytes()) == b"first"
        await response.aclose()  # a client went away mid-stream
        assert pool.open_connections == 0
        release.set()
        server.answer = fixed(b"{}")
        assert await post(pool) == (200, b"{}")
        await pool.aclose()
    assert server.connections == 2


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused():
    async def answer_once(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await fixed(b"{}")(request, writer)
        return False  # then close, as a server whose keep-alive timeout passed

    async with ScriptedServer(answer_once) as server:
        pool = pool_for(server)
        assert await post(pool) == (200, b"{}")
        await asyncio.sleep(0.1)  # the close reaches the client
        assert await post(pool) == (200, b"{}")
        await pool.aclose()
    assert server.connections == 2


async def test_idle_connections_expire_after_the_keep_alive_time():
    async with ScriptedServer(fixed(b"{}")) as server:
        pool = pool_for(server, keepalive_seconds=0.05)
        await post(pool)
        await asyncio.sleep(0.1)
        await post(pool)
        await pool.aclose()
    assert server.connections == 2
    assert server.closed_by_client >= 1


async def test_idle_connections_are_closed_after_the_keep_alive_time_without_a_request():
    async with ScriptedServer(held_until(30)) as server:
        pool = pool_for(server, keepalive_seconds=1.0)
        answers = await asyncio.gather(*(post(pool) for _ in range(30)))
        assert answers == [(200, b"{}")] * 30
        assert pool.open_connections == 30  # kept alive, idle
        await until(lambda: pool.open_connections == 0 and server.closed_by_client == 30)
        assert await post(pool) == (200, b"{}")  # the pool goes on with a new connection
        await pool.aclose()
    assert server.connections == 31


async def test_an_idle_connection_the_upstream_closes_is_closed_at_once():
    release = asyncio.Event()
    async with ScriptedServer(held_until(10, release=release)) as server:
        pool = pool_for(server, keepalive_seconds=60.0)  # far off: not what closes them
        await asyncio.gather(*(post(pool) for _ in range(10)))
        assert pool.open_connections == 10
        assert sockets_to(server.port, CLOSE_WAIT) == 0
        release.set()
        await until(
            lambda: (
                pool.open_connections == 0 and sockets_to(server.port, ESTABLISHED, CLOSE_WAIT) == 0
            )
        )
        assert await post(pool) == (200, b"{}")
        await pool.aclose()


async def test_connection_refused_is_connect_failed():
    origin, _ = Origin.parse(f"http://127.0.0.1:{closed_port()}")
    pool = Http1Pool(origin, connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(ConnectFailed):
        await pool.request("POST", "/", [], b"{}")
    assert pool.open_connections == 0


async def test_a_silent_upstream_is_a_read_timeout_and_its_connection_is_dropped():
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with ScriptedServer(silent) as server:
        pool = pool_for(server, read_timeout=0.2)
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("POST", "/", [], b"{}")
        assert caught.value.connecting is False
        assert pool.open_connections == 0
        await pool.aclose()


async def test_a_response_that_is_not_http_is_connection_broken():
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
        await writer.drain()
        return False

    async with ScriptedServer(garbage) as server:
        pool = pool_for(server)
        with pytest.raises(ConnectionBroken):
            await pool.request("POST", "/", [], b"{}")
        await pool.aclose()


async def test_a_body_cut_short_is_connection_broken():
    async def short(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")
        await writer.drain()
        return False

    async with ScriptedServer(short) as server:
        pool = pool_for(server)
        response = await pool.request("POST", "/", [], b"{}")
        with pytest.raises(ConnectionBroken):
            await response.read()
        await pool.aclose()


async def test_requests_beyond_the_connection_limit_wait_for_a_free_connection():
    release = asyncio.Event()

    async def held(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return await fixed(b"{}")(request, writer)

    async with ScriptedServer(held) as server:
        pool = pool_for(server, max_connections=1, connect_timeout=0.2)
        first = asyncio.create_task(post(pool))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamTimeout) as caught:  # waited the connect timeout
            await post(pool)
        assert caught.value.connecting is True
        second = asyncio.create_task(post(pool))
        await asyncio.sleep(0.05)
        release.set()
        assert await first == (200, b"{}")
        assert await second == (200, b"{}")
        await pool.aclose()
    assert server.connections == 1


async def test_a_closed_pool_closes_idle_connections_and_refuses_requests():
    async with ScriptedServer(fixed(b"{}")) as server:
        pool = pool_for(server)
        await post(pool)
        await pool.aclose()
        await asyncio.sleep(0.05)
        assert server.closed_by_client == 1
        with pytest.raises(ConnectFailed):
            await post(pool)


async def test_https_upstream_with_certificate_verification(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with ScriptedServer(fixed(b'{"tls": true}'), ssl_context=server_ctx) as server:
        trusted = pool_for(server, "https", ssl_context=client_ctx)
        assert await post(trusted) == (200, b'{"tls": true}')
        await trusted.aclose()
        untrusted = pool_for(server, "https")  # the system's CAs do not know this one
        with pytest.raises(ConnectFailed):
            await post(untrusted)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_sse_lines_are_split_across_and_within_chunks():
    from plugins.openai_compat.providers.upstream import sse_data_lines

    stream = _chunks(b'data: {"a"', b": 1}\r\n\r\ndata: [DO", b"NE]\n\n: comment\ndata: tail")
    assert [line async for line in sse_data_lines(stream)] == [b'{"a": 1}', b"[DONE]", b"tail"]


async def test_an_answer_over_the_size_limit_is_refused_and_its_connection_closed(monkeypatch):
    from plugins.openai_compat.providers import http1

    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 16)
    async with ScriptedServer(fixed(b'{"text": "' + b"x" * 64 + b'"}')) as server:
        pool = pool_for(server)
        response = await pool.request("POST", "/", [], b"{}")
        with pytest.raises(ConnectionBroken, match="over 16 bytes"):
            await response.read()
        assert pool.open_connections == 0
        await pool.aclose()
