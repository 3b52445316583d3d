"""The gateway's client for model upstreams (providers/client.py, pools on aiohttp),
against real servers on loopback (tests/scripted_server.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from plugins.openai_compat.providers.client import (
    ConnectFailed,
    ConnectionBroken,
    UpstreamPool,
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


def pool_for(**options: object) -> UpstreamPool:
    settings: dict[str, object] = {"connect_timeout": 2.0, "read_timeout": 2.0, **options}
    return UpstreamPool(**settings)  # type: ignore[arg-type]


def url(server: ScriptedServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}/v1/chat/completions"


def open_to(server: ScriptedServer) -> int:
    """The client's connections to ``server`` that are open (seen from this machine's
    TCP table, not from the pool's bookkeeping)."""
    return sockets_to(server.port, ESTABLISHED, CLOSE_WAIT)


async def post(
    pool: UpstreamPool, server: ScriptedServer, body: bytes = b"{}", scheme: str = "http"
) -> tuple[int, bytes]:
    response = await pool.request("POST", url(server, scheme), {}, body)
    return response.status, await response.read()


@pytest.mark.parametrize("chunked", [False, True])
async def test_sequential_requests_share_one_keep_alive_connection(chunked):
    async with ScriptedServer(fixed(b'{"ok": true}', chunked=chunked)) as server:
        pool = pool_for()
        answers = [await post(pool, server, b'{"n": %d}' % n) for n in range(3)]
        await pool.aclose()
    assert answers == [(200, b'{"ok": true}')] * 3
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}".encode() in first.lower()
    assert b"accept-encoding" not in first.lower()  # bodies are relayed as they come
    assert first.endswith(b'{"n": 0}')


async def test_an_error_answer_keeps_its_status_and_headers_and_its_connection():
    answer = b'{"error": {"message": "slow down"}}'

    async def rate_limited(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
        )
        await writer.drain()
        return True

    async with ScriptedServer(rate_limited) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        assert response.status == 429
        assert response.headers.get("retry-after") == "7"  # any case
        assert await response.read() == answer
        server.answer = fixed(b'{"error": "boom"}', status=500)
        assert await post(pool, server) == (500, b'{"error": "boom"}')
        await pool.aclose()
    assert server.connections == 1  # an error answer read whole is a complete answer


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
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        parts = response.aiter_bytes()
        assert await anext(parts) == b"first"  # before the server sent the rest
        release.set()
        assert [part async for part in parts] == [b"second"]
        assert open_to(server) == 1  # pooled again
        await pool.aclose()


async def test_a_stream_broken_mid_way_gives_its_first_chunk_then_connection_broken():
    received = asyncio.Event()

    async def breaks(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await received.wait()
        return False  # closed without the last chunk

    async with ScriptedServer(breaks) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        parts = response.aiter_bytes()
        assert await anext(parts) == b"first"
        received.set()
        with pytest.raises(ConnectionBroken):
            await anext(parts)
        server.answer = fixed(b"{}")
        assert await post(pool, server) == (200, b"{}")  # a new connection
        await pool.aclose()
    assert server.connections == 2


async def test_broken_chunk_framing_after_the_first_chunk_ends_the_stream_at_once():
    # aiohttp records such a parse error on the connection, not on the body, whose
    # reader then waited forever (past the read timeout): seen as a hung test in CI.
    received = asyncio.Event()

    async def garbles(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await received.wait()  # the rest comes in a read of its own
        writer.write(b"not a chunk size\r\n")
        await writer.drain()
        return False

    async with ScriptedServer(garbles) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        parts = response.aiter_bytes()
        assert await anext(parts) == b"first"
        received.set()
        with pytest.raises(ConnectionBroken, match="body broke off"):
            await asyncio.wait_for(anext(parts), 30)
        await pool.aclose()


async def test_a_response_closed_before_its_end_closes_its_connection():
    release = asyncio.Event()

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        return False

    async with ScriptedServer(answer) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        assert await anext(response.aiter_bytes()) == b"first"
        await response.aclose()  # a client went away mid-stream
        await until(lambda: open_to(server) == 0)
        release.set()
        server.answer = fixed(b"{}")
        assert await post(pool, server) == (200, b"{}")
        await pool.aclose()
    assert server.connections == 2


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused():
    async def answer_once(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await fixed(b"{}")(request, writer)
        return False  # then close, as a server whose keep-alive timeout passed

    async with ScriptedServer(answer_once) as server:
        pool = pool_for()
        assert await post(pool, server) == (200, b"{}")
        await until(lambda: open_to(server) == 0)  # the close reached the client
        assert await post(pool, server) == (200, b"{}")
        await pool.aclose()
    assert server.connections == 2


async def test_idle_connections_are_closed_after_the_keep_alive_time_without_a_request():
    async with ScriptedServer(held_until(30)) as server:
        pool = pool_for(keepalive_seconds=1.0)
        answers = await asyncio.gather(*(post(pool, server) for _ in range(30)))
        assert answers == [(200, b"{}")] * 30
        assert open_to(server) == 30  # kept alive, idle
        await until(lambda: open_to(server) == 0 and server.closed_by_client == 30)
        assert await post(pool, server) == (200, b"{}")  # the pool goes on with a new one
        await pool.aclose()
    assert server.connections == 31


async def test_an_idle_connection_the_upstream_closes_is_closed_at_once():
    release = asyncio.Event()
    async with ScriptedServer(held_until(10, release=release)) as server:
        pool = pool_for(keepalive_seconds=60.0)  # far off: not what closes them
        await asyncio.gather(*(post(pool, server) for _ in range(10)))
        assert open_to(server) == 10
        assert sockets_to(server.port, CLOSE_WAIT) == 0
        release.set()
        await until(lambda: open_to(server) == 0)
        assert await post(pool, server) == (200, b"{}")
        await pool.aclose()


async def test_connection_refused_is_connect_failed():
    pool = pool_for(connect_timeout=1.0)
    with pytest.raises(ConnectFailed):
        await pool.request("POST", f"http://127.0.0.1:{closed_port()}/v1/x", {}, b"{}")
    await pool.aclose()


async def test_a_silent_upstream_is_a_read_timeout_and_its_connection_is_dropped():
    async def silent(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async with ScriptedServer(silent) as server:
        pool = pool_for(read_timeout=0.2)
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("POST", url(server), {}, b"{}")
        assert caught.value.connecting is False
        await until(lambda: open_to(server) == 0)
        await pool.aclose()


async def test_an_upstream_that_stalls_mid_stream_is_a_read_timeout():
    async def stalls(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(5)
        return False

    async with ScriptedServer(stalls) as server:
        pool = pool_for(read_timeout=0.2)
        response = await pool.request("POST", url(server), {}, b"{}")
        parts = response.aiter_bytes()
        assert await anext(parts) == b"first"
        with pytest.raises(UpstreamTimeout) as caught:
            await anext(parts)
        assert caught.value.connecting is False
        await until(lambda: open_to(server) == 0)
        await pool.aclose()


async def test_a_response_that_is_not_http_is_connection_broken():
    async def garbage(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
        await writer.drain()
        return False

    async with ScriptedServer(garbage) as server:
        pool = pool_for()
        with pytest.raises(ConnectionBroken):
            await pool.request("POST", url(server), {}, b"{}")
        await pool.aclose()


async def test_a_body_cut_short_is_connection_broken():
    async def short(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")
        await writer.drain()
        return False

    async with ScriptedServer(short) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        with pytest.raises(ConnectionBroken):
            await response.read()
        await pool.aclose()


async def test_requests_beyond_the_connection_limit_wait_for_a_free_connection():
    release = asyncio.Event()

    async def held(request: bytes, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        return await fixed(b"{}")(request, writer)

    async with ScriptedServer(held) as server:
        pool = pool_for(max_connections=1, connect_timeout=0.2)
        first = asyncio.create_task(post(pool, server))
        await until(lambda: len(server.requests) == 1)
        with pytest.raises(UpstreamTimeout) as caught:  # waited the connect timeout
            await post(pool, server)
        assert caught.value.connecting is True
        second = asyncio.create_task(post(pool, server))
        await asyncio.sleep(0.05)  # (it waits for the one connection: nothing to poll)
        release.set()
        assert await first == (200, b"{}")
        assert await second == (200, b"{}")
        await pool.aclose()
    assert server.connections == 1


async def test_a_closed_pool_closes_idle_connections_and_refuses_requests():
    async with ScriptedServer(fixed(b"{}")) as server:
        pool = pool_for()
        await post(pool, server)
        await pool.aclose()
        await until(lambda: server.closed_by_client == 1)
        with pytest.raises(ConnectFailed):
            await post(pool, server)


async def test_a_pool_closed_while_a_stream_runs_lets_it_finish_then_closes_it():
    release = asyncio.Event()

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with ScriptedServer(answer) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        parts = response.aiter_bytes()
        assert await anext(parts) == b"first"
        await pool.aclose()  # a reload pointed the model elsewhere
        release.set()
        assert [part async for part in parts] == [b"last"]  # the answer goes on
        await until(lambda: server.closed_by_client == 1)  # then its connection goes


async def test_https_upstream_with_certificate_verification():
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with ScriptedServer(fixed(b'{"tls": true}'), ssl_context=server_ctx) as server:
        trusted = pool_for(ssl_context=client_ctx)
        assert await post(trusted, server, scheme="https") == (200, b'{"tls": true}')
        await trusted.aclose()
        untrusted = pool_for()  # the system's CAs do not know this one
        with pytest.raises(ConnectFailed):
            await post(untrusted, server, scheme="https")
        await untrusted.aclose()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_sse_lines_are_split_across_and_within_chunks():
    from plugins.openai_compat.providers.upstream import sse_data_lines

    stream = _chunks(b'data: {"a"', b": 1}\r\n\r\ndata: [DO", b"NE]\n\n: comment\ndata: tail")
    assert [line async for line in sse_data_lines(stream)] == [b'{"a": 1}', b"[DONE]", b"tail"]


async def test_an_answer_over_the_size_limit_is_refused(monkeypatch):
    from plugins.openai_compat.providers import client

    monkeypatch.setattr(client, "MAX_BODY_BYTES", 16)
    async with ScriptedServer(fixed(b'{"text": "' + b"x" * 64 + b'"}')) as server:
        pool = pool_for()
        response = await pool.request("POST", url(server), {}, b"{}")
        with pytest.raises(ConnectionBroken, match="over 16 bytes"):
            await response.read()
        server.answer = fixed(b"{}")
        assert await post(pool, server) == (200, b"{}")
        await pool.aclose()
