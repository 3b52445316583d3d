"""Bounded streams: a cap on live HTTP streams and WebSockets per principal, bounded
subscriber queues, and a reader that falls too far behind dropped with a final
``subscriber_lagging`` error from which it resumes by ``Last-Event-ID`` with no gap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from host.context import context
from host.storage import Store
from tests.conftest import ADMIN, ADMIN_TOKEN, running_app
from tests.fake_openai_upstream import KEY_ENV, models_config
from tests.openai_helpers import served
from tests.test_event_streams import StreamReader, wait_until
from tests.test_websocket import WS, ask, refused_handshake

OPS_TOKEN = "test-ops-token-0123456789"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
FAST = {"heartbeat_seconds": 0.2, "poll_seconds": 0.1}


def settings_with(make_settings: Any, **sections: Any) -> Any:
    """A second all-gates token (``ops``) beside ``admin``, and fast event streams."""
    events = {**FAST, **sections.pop("events", {})}
    ops = {"tokens": {"ops": {"token": OPS_TOKEN, "gates": ["*"]}}}
    return make_settings(auth=ops, events=events, **sections)


@asynccontextmanager
async def open_stream(
    client: Any, path: str, headers: dict[str, str], **extra: str
) -> AsyncIterator[StreamReader]:
    async with client.request(path, headers={**headers, **extra}) as conn:
        await conn.send_complete()
        reader = StreamReader(conn, sse=True)
        try:
            yield reader
        finally:
            await conn.disconnect()


async def refused(client: Any, path: str, headers: dict[str, str]) -> dict[str, Any]:
    # The guard only bounds a hung test: a stream that opened would never end.
    response = await asyncio.wait_for(client.get(path, headers=headers), 10)
    assert response.status_code == 429, await response.get_data(as_text=True)
    body: dict[str, Any] = await response.get_json()
    return body


async def waiting_run(client: Any) -> str:
    """A run of the shipped ``approval-publish`` example, waiting for its approval: its
    event stream stays open."""
    started = await client.post(
        "/pipelines/approval-publish/start", json={"input": {"topic": "caps"}}, headers=ADMIN
    )
    run_id: str = (await started.get_json())["runId"]
    deadline = asyncio.get_running_loop().time() + 15
    while (await (await client.get(f"/runs/{run_id}", headers=ADMIN)).get_json())[
        "status"
    ] != "waiting":
        assert asyncio.get_running_loop().time() < deadline, "the run never waited"
        await asyncio.sleep(0.02)
    return run_id


async def metric(client: Any, line: str) -> bool:
    text = (await (await client.get("/metrics", headers=ADMIN)).get_data()).decode()
    return line in text.splitlines()


# -- the cap per principal ---------------------------------------------------------------------


async def test_streams_past_the_cap_get_429_across_routes_while_another_principal_streams(
    make_settings,
):
    settings = settings_with(make_settings, events={"max_streams_per_principal": 2})
    async with running_app(settings) as (app, client):
        slots = context(app).hub.slots
        run_id = await waiting_run(client)
        async with (
            open_stream(client, "/gateway/events", ADMIN) as gateway_stream,
            open_stream(client, f"/runs/{run_id}/events", ADMIN) as run_stream,
        ):
            assert await gateway_stream.next_is_heartbeat()
            assert (await run_stream.next_event())["event"] == "run.created"
            # A third live stream of the same principal, on either route, is refused.
            for path in ("/gateway/events", f"/runs/{run_id}/events"):
                body = await refused(client, path, ADMIN)
                assert set(body) == {"error"}
                assert body["error"]["code"] == "too_many_streams"
                assert "events.max_streams_per_principal = 2" in body["error"]["message"]
            jsonl = {"Accept": "application/x-ndjson"}
            assert (await refused(client, "/gateway/events", {**ADMIN, **jsonl}))["error"][
                "code"
            ] == "too_many_streams"
            # A JSON page is a plain request: it holds no slot.
            page = await client.get("/gateway/events?format=json", headers=ADMIN)
            assert page.status_code == 200
            # Another principal is unaffected.
            async with open_stream(client, "/gateway/events", OPS) as other:
                assert await other.next_is_heartbeat()
            assert slots.open("token:admin") == 2
        await wait_until(lambda: slots.open("token:admin") == 0 and slots.open("token:ops") == 0)
        assert await metric(client, 'gateway_rate_limited_requests_total{scope="streams"} 3.0')


async def test_closing_a_stream_frees_its_slot_for_the_next(make_settings):
    settings = settings_with(make_settings, events={"max_streams_per_principal": 1})
    async with running_app(settings) as (app, client):
        slots = context(app).hub.slots
        async with open_stream(client, "/gateway/events", ADMIN) as first:
            assert await first.next_is_heartbeat()
            await refused(client, "/gateway/events", ADMIN)
        await wait_until(lambda: slots.open("token:admin") == 0)
        async with open_stream(client, "/gateway/events", ADMIN) as again:
            assert await again.next_is_heartbeat()
            assert slots.open("token:admin") == 1


async def test_websockets_past_the_cap_are_refused_before_accept_with_429(make_settings):
    settings = settings_with(make_settings, server={"max_websockets_per_principal": 1})
    async with running_app(settings) as (app, client):
        slots = context(app).lifecycle.websocket_slots
        async with client.websocket(WS, headers=ADMIN) as first:
            assert (await ask(first, "capabilities.request"))["kind"] == "capabilities.response"
            response = await refused_handshake(client, headers=ADMIN)
            assert response.status_code == 429
            body = await response.get_json()
            assert body["error"]["code"] == "too_many_websockets"
            assert "server.max_websockets_per_principal = 1" in body["error"]["message"]
            async with client.websocket(WS, headers=OPS) as other:
                assert (await ask(other, "capabilities.request"))["kind"] == (
                    "capabilities.response"
                )
        await wait_until(lambda: slots.open("token:admin") == 0)
        async with client.websocket(WS, headers=ADMIN) as again:
            assert (await ask(again, "capabilities.request"))["kind"] == "capabilities.response"
        assert await metric(client, 'gateway_rate_limited_requests_total{scope="websockets"} 1.0')


async def test_a_streamed_model_answer_takes_a_slot_and_is_refused_before_the_upstream(
    make_settings, fake_upstream, monkeypatch
):
    monkeypatch.setenv(KEY_ENV, fake_upstream.api_key)
    settings = settings_with(
        make_settings, events={"max_streams_per_principal": 1}, models=models_config(fake_upstream)
    )
    ask_model = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    async with running_app(settings) as (app, client):
        async with open_stream(client, "/gateway/events", ADMIN) as events:
            assert await events.next_is_heartbeat()
            for path, body in (
                ("/v1/chat/completions", ask_model),
                ("/v1/responses", {"model": "gpt-test", "input": "hi"}),
            ):
                response = await client.post(path, json={**body, "stream": True}, headers=ADMIN)
                assert response.status_code == 429
                assert (await response.get_json())["error"]["code"] == "too_many_streams"
            assert fake_upstream.requests == []  # refused before the upstream was asked
            # A plain answer is no stream: it is served.
            plain = await client.post("/v1/chat/completions", json=ask_model, headers=ADMIN)
            assert plain.status_code == 200
        await wait_until(lambda: context(app).hub.slots.open("token:admin") == 0)
        streamed = await client.post(
            "/v1/chat/completions", json={**ask_model, "stream": True}, headers=ADMIN
        )
        assert streamed.status_code == 200
        assert (await streamed.get_data()).endswith(b"data: [DONE]\n\n")
        await wait_until(lambda: context(app).hub.slots.open("token:admin") == 0)


# -- bounded queues: a reader too far behind ---------------------------------------------------


async def burst(url: str, n: int, blob: str = "") -> None:
    """``n`` events on the ``gateway`` stream in one transaction, written straight to the
    store as another worker would: the stream's tail finds them all in one poll."""
    other = Store(url)
    await other.open()
    try:
        async with other.write() as conn:
            for i in range(n):
                await other.append_event("gateway", "test.burst", {"i": i, "blob": blob}, conn)
    finally:
        await other.close()


async def test_a_stream_too_far_behind_ends_with_subscriber_lagging_and_resumes_without_gap(
    make_settings, store_url
):
    settings = settings_with(make_settings, events={"subscriber_queue_max": 100})
    async with running_app(settings) as (app, client):
        await client.post("/gateway/pause", headers=ADMIN)
        await client.post("/gateway/resume", headers=ADMIN)
        async with open_stream(client, "/gateway/events", ADMIN) as reader:
            assert [int(e["id"]) for e in await reader.events(2)] == [1, 2]
            await burst(store_url, 300)
            final = await reader.next_event()
            assert final["event"] == "error"
            assert "id" not in final  # Last-Event-ID stays at the last event it got
            data = json.loads(final["data"])
            assert data["error"]["code"] == "subscriber_lagging"
            assert data["last_seq"] == 2
            assert "Last-Event-ID: 2" in data["error"]["message"]
            with pytest.raises(EOFError):
                await reader.next_item()  # nothing after the error: the stream ended
        async with open_stream(
            client, "/gateway/events", ADMIN, **{"Last-Event-ID": str(data["last_seq"])}
        ) as resumed:
            seqs = [int(e["id"]) for e in await resumed.events(300)]
        assert seqs == list(range(3, 303))
        assert await metric(client, "gateway_event_subscribers_dropped_total 1.0")
        assert context(app).hub.slots.open("token:admin") == 0


async def test_an_in_process_subscriber_behind_catches_up_from_the_store(make_settings, store_url):
    settings = settings_with(make_settings, events={"subscriber_queue_max": 100})
    async with running_app(settings) as (app, _client):
        hub = context(app).hub
        seen: list[int] = []

        async def consume() -> None:
            async with contextlib.aclosing(hub.subscribe("gateway")) as events:
                async for event in events:
                    if event is not None:
                        seen.append(event.seq)
                        if event.seq == 300:
                            return

        task = asyncio.create_task(consume())
        await wait_until(lambda: "gateway" in hub._tails and hub.open_streams == 1)
        await burst(store_url, 300)
        await asyncio.wait_for(task, 15)
    assert seen == list(range(1, 301))


# -- a client that never reads, on a real server -----------------------------------------------


def _dechunk(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked response (headers included in ``raw``)."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return body


def _sse_blocks(body: bytes) -> list[dict[str, str]]:
    blocks = []
    for raw in body.decode().split("\n\n"):
        fields = {}
        for line in raw.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            blocks.append(fields)
    return blocks


async def test_a_client_that_never_reads_is_dropped_and_resumes_from_last_event_id(
    make_settings, store_url
):
    settings = settings_with(make_settings, events={"subscriber_queue_max": 100})
    published = 300
    blob = "x" * 64 * 1024  # 300 of these outgrow the socket buffers between the ends
    from host.app import create_app

    app = create_app(settings, load_entrypoints=False)
    async with served(app) as server:
        port = int(server.url.rpartition(":")[2])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.write(
            b"GET /gateway/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
            + b"Accept: text/event-stream\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        # From here on the client reads nothing while events are published one by one.
        hub = context(app).hub
        for i in range(published):
            await hub.publish("gateway", "test.big", {"i": i, "blob": blob})
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as http:
            deadline = asyncio.get_running_loop().time() + 30
            while (
                "gateway_event_subscribers_dropped_total 1.0"
                not in (await http.get("/metrics")).text.splitlines()
            ):
                assert asyncio.get_running_loop().time() < deadline, "never dropped"
                await asyncio.sleep(0.05)
            raw = head
            while not raw.endswith(b"\r\n0\r\n\r\n"):
                raw += await asyncio.wait_for(reader.read(1 << 20), 10)
            writer.close()
            blocks = _sse_blocks(_dechunk(raw))
            events, final = blocks[:-1], blocks[-1]
            assert final["event"] == "error" and "id" not in final
            last_seq = json.loads(final["data"])["last_seq"]
            assert json.loads(final["data"])["error"]["code"] == "subscriber_lagging"
            got = [int(e["id"]) for e in events]
            assert got == list(range(1, last_seq + 1))
            assert last_seq < published  # it was dropped before the end
            # Resume: the rest, from the next event on, none missing.
            rest: list[int] = []
            headers = {"Last-Event-ID": str(last_seq)}
            async with http.stream("GET", "/gateway/events", headers=headers) as resumed:
                async for line in resumed.aiter_lines():
                    if line.startswith("id: "):
                        rest.append(int(line[4:]))
                        if rest[-1] == published:
                            break
            assert rest == list(range(last_seq + 1, published + 1))
