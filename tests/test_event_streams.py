"""Event streams through ``GET /gateway/events``: SSE, JSONL and the JSON page, resume by
``Last-Event-ID`` / ``?after=``, heartbeats, bad input, and one producer per stream.

Events are made the way a client makes them: ``POST /gateway/pause`` and
``POST /gateway/resume`` each append one event to the control plugin's ``gateway`` stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from host.context import context
from host.storage import Store
from tests.conftest import ADMIN, running_app

STREAM = "gateway"
PATH = "/gateway/events"
FAST = {"events": {"heartbeat_seconds": 0.2, "poll_seconds": 0.1}}
# The tests of what the store keeps and hands out run on SQLite and PostgreSQL; the ones
# of the HTTP encodings alone, once.
BOTH_STORES = pytest.mark.usefixtures("store_url")


class Gateway:
    """Makes gateway events through HTTP: alternately pause and resume."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.paused = False
        self.count = 0

    async def make_events(self, n: int) -> None:
        for _ in range(n):
            path = "/gateway/resume" if self.paused else "/gateway/pause"
            response = await self.client.post(path, headers=ADMIN)
            assert response.status_code == 200, await response.get_data(as_text=True)
            self.paused = not self.paused
            self.count += 1

    def type_of(self, seq: int) -> str:
        return "gateway.paused" if seq % 2 else "gateway.resumed"


class StreamReader:
    """Reads an open SSE or JSONL response chunk by chunk from the Quart test client."""

    def __init__(self, conn: Any, sse: bool) -> None:
        self.conn = conn
        self.sse = sse
        self.buf = b""
        self.ended = False

    async def _fill(self, timeout: float) -> None:
        chunk = await asyncio.wait_for(self.conn.receive(), timeout)
        if chunk == b"":
            self.ended = True
        self.buf += chunk

    async def next_item(self, timeout: float = 5) -> dict[str, Any]:
        """The next SSE block (as fields, comments under ``comment``) or JSONL object."""
        sep = b"\n\n" if self.sse else b"\n"
        while sep not in self.buf:
            if self.ended:
                raise EOFError("stream ended")
            await self._fill(timeout)
        raw, self.buf = self.buf.split(sep, 1)
        text = raw.decode()
        if not self.sse:
            return json.loads(text)
        fields: dict[str, Any] = {}
        for line in text.split("\n"):
            if line.startswith(":"):
                fields.setdefault("comment", []).append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        return fields

    async def next_event(self, timeout: float = 5) -> dict[str, Any]:
        """The next real event (heartbeats and preamble skipped)."""
        while True:
            item = await self.next_item(timeout)
            if self.sse and "data" in item:
                return item
            if not self.sse and item.get("type") != "heartbeat":
                return item

    async def events(self, n: int) -> list[dict[str, Any]]:
        return [await self.next_event() for _ in range(n)]

    async def next_is_heartbeat(self) -> bool:
        """True if the next item is a heartbeat (nothing else was pending)."""
        while True:
            item = await self.next_item()
            if self.sse and "retry" in item:
                continue  # the stream preamble
            if self.sse:
                return "data" not in item and item.get("comment") == ["heartbeat"]
            return item.get("type") == "heartbeat"


@asynccontextmanager
async def open_stream(
    client: Any,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    sse: bool = True,
) -> AsyncIterator[StreamReader]:
    all_headers = {**ADMIN, **(headers or {})}
    if not sse:
        all_headers["Accept"] = "application/x-ndjson"
    async with client.request(PATH, headers=all_headers, query_string=query) as conn:
        await conn.send_complete()
        reader = StreamReader(conn, sse)
        try:
            yield reader
        finally:
            await conn.disconnect()


def sse_seqs(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["id"]) for e in events]


async def page(client: Any, **query: Any) -> dict[str, Any]:
    response = await client.get(PATH, headers=ADMIN, query_string=query)
    assert response.status_code == 200
    assert response.content_type.startswith("application/json")
    return await response.get_json()


async def wait_until(predicate: Any, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


@pytest.fixture
async def fast(make_settings: Any, store_url: str) -> AsyncIterator[tuple[Any, Any, Gateway]]:
    """A gateway with quick heartbeats, on SQLite and on PostgreSQL (``store_url``)."""
    async with running_app(make_settings(**FAST)) as (app, client):
        yield app, client, Gateway(client)


# -- SSE framing and resume ------------------------------------------------------------------


async def test_sse_frames_carry_seq_as_id_type_as_event_and_json_data(fast):
    _app, client, gw = fast
    await gw.make_events(3)
    async with open_stream(client) as reader:
        events = await reader.events(3)
        assert reader.conn.status_code == 200
        assert reader.conn.headers["Content-Type"].startswith("text/event-stream")
        assert reader.conn.headers["Cache-Control"] == "no-cache"
    assert sse_seqs(events) == [1, 2, 3]
    for event in events:
        seq = int(event["id"])
        assert event["event"] == gw.type_of(seq)
        data = json.loads(event["data"])
        assert data["seq"] == seq
        assert data["type"] == event["event"]
        assert data["stream"] == STREAM
        assert data["data"]["by"] == "admin"
        assert data["data"]["paused"] is (seq % 2 == 1)


@BOTH_STORES
async def test_resume_with_last_event_id_delivers_missed_then_live_events_exactly_once(fast):
    _app, client, gw = fast
    await gw.make_events(3)
    async with open_stream(client) as reader:
        first = await reader.events(3)
    assert sse_seqs(first) == [1, 2, 3]
    # Two events happen while the client is away.
    await gw.make_events(2)
    async with open_stream(client, headers={"Last-Event-ID": first[-1]["id"]}) as reader:
        missed = await reader.events(2)
        # ...and two more while it is connected again.
        await gw.make_events(2)
        live = await reader.events(2)
        # Nothing else is pending: the next thing on the wire is a heartbeat.
        assert await reader.next_is_heartbeat()
    assert sse_seqs(missed) == [4, 5]
    assert sse_seqs(live) == [6, 7]
    assert [e["event"] for e in missed + live] == [gw.type_of(s) for s in (4, 5, 6, 7)]


async def test_after_query_parameter_resumes_like_last_event_id(fast):
    _app, client, gw = fast
    await gw.make_events(5)
    async with open_stream(client, query={"after": 2}) as reader:
        stored = await reader.events(3)
        await gw.make_events(1)
        live = await reader.next_event()
        assert await reader.next_is_heartbeat()
    assert sse_seqs(stored) == [3, 4, 5]
    assert int(live["id"]) == 6


async def test_after_query_wins_over_last_event_id_header(fast):
    _app, client, gw = fast
    await gw.make_events(4)
    async with open_stream(client, query={"after": 3}, headers={"Last-Event-ID": "1"}) as reader:
        event = await reader.next_event()
        assert await reader.next_is_heartbeat()
    assert int(event["id"]) == 4


async def test_resume_from_the_latest_event_waits_for_new_ones_only(fast):
    _app, client, gw = fast
    await gw.make_events(2)
    async with open_stream(client, headers={"Last-Event-ID": "2"}) as reader:
        assert await reader.next_is_heartbeat()
        await gw.make_events(1)
        event = await reader.next_event()
    assert int(event["id"]) == 3


# -- the three encodings agree ---------------------------------------------------------------


@BOTH_STORES
async def test_jsonl_and_json_page_return_the_same_events_as_sse(fast):
    _app, client, gw = fast
    await gw.make_events(4)
    async with open_stream(client, query={"after": 1}) as reader:
        sse = [json.loads(e["data"]) for e in await reader.events(3)]
    async with open_stream(client, query={"after": 1}, sse=False) as reader:
        jsonl = await reader.events(3)
        assert reader.conn.headers["Content-Type"].startswith("application/x-ndjson")
    body = await page(client, after=1, limit=10)
    assert [e["seq"] for e in sse] == [2, 3, 4]
    assert jsonl == sse
    assert body["events"] == sse
    assert body["stream"] == STREAM
    assert body["has_more"] is False
    assert body["next_after"] == 4


async def test_jsonl_resumes_with_last_event_id_and_follows_live_events(fast):
    _app, client, gw = fast
    await gw.make_events(2)
    async with open_stream(client, headers={"Last-Event-ID": "1"}, sse=False) as reader:
        stored = await reader.next_event()
        await gw.make_events(1)
        live = await reader.next_event()
        assert await reader.next_is_heartbeat()
    assert [stored["seq"], live["seq"]] == [2, 3]


@BOTH_STORES
async def test_json_page_walks_the_stream_with_has_more_and_next_after(fast):
    _app, client, gw = fast
    await gw.make_events(5)
    seen: list[int] = []
    after = 0
    pages = []
    while True:
        body = await page(client, after=after, limit=2)
        pages.append(([e["seq"] for e in body["events"]], body["has_more"], body["next_after"]))
        seen += [e["seq"] for e in body["events"]]
        after = body["next_after"]
        if not body["has_more"]:
            break
    assert pages == [([1, 2], True, 2), ([3, 4], True, 4), ([5], False, 5)]
    assert seen == [1, 2, 3, 4, 5]
    empty = await page(client, after=5, limit=2)
    assert empty["events"] == [] and empty["has_more"] is False and empty["next_after"] == 5


async def test_json_page_is_chosen_by_accept_header_and_by_format_parameter(fast):
    _app, client, gw = fast
    await gw.make_events(2)
    by_accept = await client.get(PATH, headers={**ADMIN, "Accept": "application/json"})
    by_format = await client.get(PATH, headers=ADMIN, query_string={"format": "json"})
    for response in (by_accept, by_format):
        assert response.status_code == 200
        body = await response.get_json()
        assert [e["seq"] for e in body["events"]] == [1, 2]


# -- heartbeats ------------------------------------------------------------------------------


async def test_idle_sse_stream_sends_heartbeat_comments(fast):
    _app, client, _gw = fast
    async with open_stream(client) as reader:
        assert await reader.next_is_heartbeat()
        assert await reader.next_is_heartbeat()


async def test_idle_jsonl_stream_sends_heartbeat_lines(fast):
    _app, client, _gw = fast
    async with open_stream(client, sse=False) as reader:
        first = await reader.next_item()
        second = await reader.next_item()
    for item in (first, second):
        assert item["type"] == "heartbeat"
        assert isinstance(item["ts_ms"], int)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "code"),
    [
        ({"after": "-1"}, {}, "invalid_parameter"),
        ({"after": "three"}, {}, "invalid_parameter"),
        ({"after": "1.5"}, {}, "invalid_parameter"),
        ({"after": str(2**63)}, {}, "invalid_parameter"),
        ({"limit": "0"}, {}, "invalid_limit"),
        ({"limit": "1001"}, {}, "invalid_limit"),
        ({"limit": "ten"}, {}, "invalid_parameter"),
        ({"format": "xml"}, {}, "invalid_format"),
        ({}, {"Last-Event-ID": "abc"}, "invalid_parameter"),
        ({}, {"Last-Event-ID": "-3"}, "invalid_parameter"),
        ({"format": "jsonl"}, {"Last-Event-ID": "x"}, "invalid_parameter"),
    ],
)
async def test_bad_stream_parameters_answer_400_with_the_error_envelope(fast, query, headers, code):
    _app, client, gw = fast
    await gw.make_events(2)
    response = await client.get(PATH, headers={**ADMIN, **headers}, query_string=query)
    assert response.status_code == 400
    body = await response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    # Nothing was written: the stream still holds exactly the two events.
    assert [e["seq"] for e in (await page(client, limit=10))["events"]] == [1, 2]


async def test_event_stream_requires_authentication(fast):
    _app, client, _gw = fast
    response = await client.get(PATH, query_string={"format": "json"})
    assert response.status_code == 401
    assert (await response.get_json())["error"]["type"] == "authentication_error"


# -- one producer per stream -----------------------------------------------------------------


@BOTH_STORES
async def test_twenty_subscribers_share_one_tail_which_goes_away_after_they_leave(fast):
    app, client, gw = fast
    hub = context(app).hub
    await gw.make_events(1)
    async with AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(open_stream(client)) for _ in range(20)]
        for reader in readers:
            assert int((await reader.next_event())["id"]) == 1
        assert list(hub._tails) == [STREAM]
        tail = hub._tails[STREAM]
        assert len(tail.subscribers) == 20
        assert hub.open_streams == 20
        await gw.make_events(1)
        for reader in readers:
            event = await reader.next_event()
            assert (event["id"], event["event"]) == ("2", "gateway.resumed")
        # Still the same single producer after it fanned out.
        assert list(hub._tails) == [STREAM] and hub._tails[STREAM] is tail
    await wait_until(lambda: hub.open_streams == 0 and not hub._tails)
    assert tail.task.done()


async def test_subscribers_connecting_together_start_only_one_tail(fast):
    app, client, gw = fast
    hub = context(app).hub
    await gw.make_events(1)
    async with AsyncExitStack() as stack:
        readers = await asyncio.gather(
            *(stack.enter_async_context(open_stream(client)) for _ in range(10))
        )
        await asyncio.gather(*(r.next_event() for r in readers))
        assert list(hub._tails) == [STREAM]
        tails_running = [
            t
            for t in asyncio.all_tasks()
            if t.get_name() == f"event-tail:{STREAM}" and not t.done()
        ]
        assert len(tails_running) == 1
        await gw.make_events(1)
        got = await asyncio.gather(*(r.next_event() for r in readers))
        assert {e["id"] for e in got} == {"2"}


@BOTH_STORES
async def test_subscribers_joining_while_events_are_published_miss_and_repeat_nothing(fast):
    _app, client, gw = fast
    await gw.make_events(3)
    total = 3 + 24

    async def publisher() -> None:
        for _ in range(24):
            await gw.make_events(1)
            await asyncio.sleep(0)

    async def subscriber(after: int, delay: int) -> list[int]:
        for _ in range(delay):
            await asyncio.sleep(0)
        async with open_stream(client, headers={"Last-Event-ID": str(after)}) as reader:
            return sse_seqs(await reader.events(total - after))

    results = await asyncio.gather(
        publisher(), *(subscriber(after, delay) for after, delay in [(0, 0), (3, 5), (1, 20)])
    )
    for after, seqs in zip((0, 3, 1), results[1:], strict=True):
        assert seqs == list(range(after + 1, total + 1))


async def test_events_written_by_another_process_reach_live_subscribers(fast, store_url):
    _app, client, _gw = fast
    other = Store(store_url)
    await other.open()
    try:
        async with open_stream(client) as reader:
            assert await reader.next_is_heartbeat()
            # Written straight to the store, as another worker would: no in-process notify.
            await other.append_event(STREAM, "elsewhere.happened", {"n": 1})
            event = await reader.next_event()
    finally:
        await other.close()
    assert (event["id"], event["event"]) == ("1", "elsewhere.happened")
    assert json.loads(event["data"])["data"] == {"n": 1}


async def test_on_postgresql_another_process_wakes_a_stream_without_waiting_for_the_poll(
    make_settings, postgres_url
):
    # The poll is as slow as it can be set (60 s) and the reads give up well before it:
    # only the store's notification can bring the events in time.
    settings = make_settings(
        storage={"url": postgres_url}, events={"heartbeat_seconds": 30, "poll_seconds": 60}
    )
    other = Store(postgres_url)
    async with running_app(settings) as (_app, client):
        await other.open()
        try:
            async with open_stream(client) as reader:
                await other.append_event(STREAM, "elsewhere.happened", {"n": 1})
                first = await reader.next_event(timeout=20)
                async with other.write() as conn:
                    for n in (2, 3):
                        await other.append_event(STREAM, "elsewhere.happened", {"n": n}, conn)
                rest = [await reader.next_event(timeout=20) for _ in range(2)]
        finally:
            await other.close()
    got = [first, *rest]
    assert [e["id"] for e in got] == ["1", "2", "3"]
    assert [json.loads(e["data"])["data"]["n"] for e in got] == [1, 2, 3]


# -- shutdown ----------------------------------------------------------------------------------


async def test_drain_ends_open_streams_with_a_closing_event_and_refuses_new_ones(fast):
    app, client, gw = fast
    hub = context(app).hub
    await gw.make_events(1)
    async with open_stream(client) as sse, open_stream(client, sse=False) as jsonl:
        await sse.next_event()
        await jsonl.next_event()
        await hub.drain(timeout=5)
        closing = await sse.next_event()
        closing_line = await jsonl.next_event()
        assert closing["event"] == "stream.closing"
        assert json.loads(closing["data"])["type"] == "stream.closing"
        assert closing_line["type"] == "stream.closing"
        assert hub.open_streams == 0
    refused = await client.get(PATH, headers=ADMIN)
    assert refused.status_code == 503
    assert (await refused.get_json())["error"]["code"] == "draining"
