"""Event streams: append-only logs in the store, live fan-out, SSE / JSONL / JSON page.

One :class:`EventHub` per app. Each stream that has live subscribers gets one *tail*: a
single task that learns about new events (woken in-process by :meth:`EventHub.notify`;
for events written by other processes, woken by the store's notifications on PostgreSQL,
see :mod:`host.storage.notify`, and by polling the store's per-stream position in any
case) and hands them to every subscriber. Many subscribers to one stream cost one producer.
Subscribers first replay what is stored after their position, then follow the tail, so a
resumed stream misses nothing and repeats nothing.

A live stream checks the credential it was opened with again (see :mod:`host.auth.watch`)
every second and at a session's expiry; once it no longer stands the stream ends with a
``stream.closing`` event whose reason is ``unauthorized``.

Nothing here grows without bound: each subscriber's queue holds at most
``subscriber_queue_max`` live events. A client stream whose reader falls further behind is
dropped with a final ``error`` event (``subscriber_lagging``, with the last seq it got, to
resume from); an in-process subscriber catches up from the store instead. Each principal
may hold ``max_streams_per_principal`` live HTTP streams (:mod:`host.stream_slots`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from quart import Request, Response, g, has_request_context

from host.auth.watch import CredentialWatch, credential_watch
from host.errors import GatewayError
from host.metrics import GatewayMetrics
from host.storage import Event, Store, now_ms
from host.storage.notify import StreamListener
from host.stream_slots import SlotBody, StreamSlot, StreamSlots
from host.ticks import with_ticks

log = logging.getLogger("gateway.events")

SSE = "text/event-stream"
JSONL = "application/x-ndjson"
MAX_SEQ = 2**63 - 1  # a seq is a signed 64-bit integer in every store

REPLAY_BATCH = 500

_STOP = object()
_LAGGING = object()  # the subscriber's queue overflowed: it fell too far behind
_REVOKED = object()  # the credential of a stream no longer stands
_TICK = object()  # a due time passed with no event (with_ticks)
T = TypeVar("T")


@dataclass(frozen=True)
class Lagging:
    """The subscriber fell more than ``subscriber_queue_max`` events behind the live
    stream and was dropped; it got every event up to ``last_seq``."""

    last_seq: int


@dataclass(frozen=True)
class Truncated:
    """The events after ``after`` up to ``pruned_through`` were removed by retention."""

    after: int
    pruned_through: int


Notice = Lagging | Truncated


class _Inbox(asyncio.Queue[Any]):
    """A subscriber's queue of live events from its tail. ``drop``: a subscriber that
    falls behind is dropped (a client stream), rather than left to catch up."""

    lagging = False

    def __init__(self, drop: bool) -> None:
        super().__init__()
        self.drop = drop

    def offer(self, event: Event, limit: int) -> bool:
        """Queue ``event``; when ``limit`` events already wait, drop them all (what was
        missed is in the store), queue ``_LAGGING`` instead and answer False."""
        if self.qsize() < limit:
            self.put_nowait(event)
            return True
        self.reset()
        self.lagging = True
        self.put_nowait(_LAGGING)
        return False

    def reset(self) -> None:
        while not self.empty():
            self.get_nowait()
        self.lagging = False


class _Tail:
    """The single producer for one stream while anyone listens."""

    def __init__(self, hub: EventHub, stream: str, position: int) -> None:
        self.hub = hub
        self.stream = stream
        self.position = position
        self.subscribers: set[_Inbox] = set()
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"event-tail:{stream}")

    async def _run(self) -> None:
        poll = self.hub.poll_seconds
        try:
            while self.subscribers and not self.hub.draining:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll):
                        await self.wake.wait()
                self.wake.clear()
                if not self.subscribers or self.hub.draining:
                    break
                await self._pump()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event tail for %s failed", self.stream)
        finally:
            for q in self.subscribers:
                q.put_nowait(_STOP)
            # A newer tail may already serve this stream: only remove ourselves.
            if self.hub._tails.get(self.stream) is self:
                del self.hub._tails[self.stream]

    def leave(self, queue: _Inbox) -> None:
        self.subscribers.discard(queue)
        if not self.subscribers:
            self.wake.set()  # let the producer notice at once that nobody listens

    async def _pump(self) -> None:
        while True:
            latest = await self.hub.store.last_seq(self.stream)
            if latest <= self.position:
                return
            batch = await self.hub.store.events_after(self.stream, self.position, REPLAY_BATCH)
            if not batch:
                return
            limit = self.hub.subscriber_queue_max
            for q in list(self.subscribers):
                for event in batch:
                    if not q.offer(event, limit):
                        self.subscribers.discard(q)
                        if q.drop:
                            self.hub.dropped()
                        break
            self.position = batch[-1].seq


class EventHub:
    def __init__(
        self,
        store: Store,
        *,
        heartbeat_seconds: float = 15.0,
        poll_seconds: float = 1.0,
        page_limit_max: int = 1000,
        observers: Callable[[Event], Awaitable[None]] | None = None,
        subscriber_queue_max: int = 1000,
        max_streams_per_principal: int = 32,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.store = store
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.page_limit_max = page_limit_max
        self.subscriber_queue_max = subscriber_queue_max
        self._metrics = metrics
        self.slots = StreamSlots(
            max_streams_per_principal,
            "event streams",
            "events.max_streams_per_principal",
            "too_many_streams",
            on_refused=metrics.rate_limited.labels("streams").inc if metrics else None,
        )
        self.draining = False
        self._tails: dict[str, _Tail] = {}
        self._listener: StreamListener | None = None
        self._observers = observers
        self._drained = asyncio.Event()
        self._open_streams = 0

    async def start(self) -> None:
        """Listen for the events other processes append (on a store that tells: see
        :meth:`Store.stream_listener`). Call once the store is open."""
        if self._listener is None:
            self._listener = self.store.stream_listener(self._wake, self._wake_all)
            if self._listener is not None:
                await self._listener.start()

    def _wake(self, stream: str) -> None:
        tail = self._tails.get(stream)
        if tail is not None:
            tail.wake.set()

    def _wake_all(self) -> None:
        for tail in self._tails.values():
            tail.wake.set()

    # -- producing ------------------------------------------------------------------------

    async def publish(
        self, stream: str, type: str, data: dict[str, Any] | None = None, *, observe: bool = True
    ) -> Event:
        """Store an event and wake its subscribers. ``observe=False``: the
        ``gateway_on_event`` observers are not told (an event derived from others, such
        as the dashboard's change notices, which would otherwise be observed again)."""
        event = await self.store.append_event(stream, type, data)
        if observe:
            await self.notify(event)
        else:
            self._wake(event.stream)
        return event

    async def notify(self, event: Event) -> None:
        """Tell live subscribers and observers about an event already committed."""
        self._wake(event.stream)
        if self._observers is not None:
            try:
                await self._observers(event)
            except Exception:
                log.exception("event observer failed for %s#%s", event.stream, event.seq)

    # -- consuming ------------------------------------------------------------------------

    async def subscribe(
        self,
        stream: str,
        after: int = 0,
        until: Callable[[Event], bool] | None = None,
    ) -> AsyncGenerator[Event | None, None]:
        """Events after ``after``: stored ones first, then live ones. Yields ``None`` as a
        heartbeat tick when nothing happened for ``heartbeat_seconds``. Ends when ``until``
        returns True for an event (that event is yielded), or when the hub drains. A
        subscriber that falls behind catches up from the store: it misses nothing."""
        async with contextlib.aclosing(
            self.follow(stream, after, until, drop_lagging=False)
        ) as items:
            async for item in items:
                if item is None or isinstance(item, Event):
                    yield item

    async def follow(
        self,
        stream: str,
        after: int = 0,
        until: Callable[[Event], bool] | None = None,
        *,
        drop_lagging: bool = True,
    ) -> AsyncGenerator[Event | Notice | None, None]:
        """:meth:`subscribe`, telling also what a client should know: :class:`Truncated`
        when retention removed events after its position, and, when it falls more than
        ``subscriber_queue_max`` events behind the live stream, a final :class:`Lagging`
        (with ``drop_lagging``; without, it catches up from the store)."""
        queue = _Inbox(drop_lagging)
        self._open_streams += 1
        position = after
        tail: _Tail | None = None
        try:
            while True:
                # Join the stream's producer first, then replay what is stored: the tail
                # delivers everything after its position at the moment we joined, and the
                # replay reads the store after that moment, so between them nothing is
                # missed; what both deliver is dropped by seq.
                queue.reset()
                tail = await self._join(stream, queue)
                known = tail.position  # committed: if the replay lacks it, it was pruned
                first = True
                while True:
                    batch = await self.store.events_after(stream, position, REPLAY_BATCH)
                    if first:
                        first = False
                        gone = batch[0].seq - 1 if batch else known
                        if gone > position:
                            yield Truncated(position, gone)
                            position = gone
                    for event in batch:
                        position = event.seq
                        yield event
                        if until is not None and until(event):
                            return
                    if len(batch) < REPLAY_BATCH:
                        break
                if queue.lagging:
                    # It fell behind while replaying: the store has what it missed.
                    tail.leave(queue)
                    tail = None
                    continue
                restart = False
                while not self.draining:
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a
                        # cancellation (client gone) that lands as the item arrives, and
                        # the stream would then write to a closed connection forever.
                        async with asyncio.timeout(self.heartbeat_seconds):
                            item = await queue.get()
                    except TimeoutError:
                        yield None
                        continue
                    if item is _STOP:
                        # Draining, or the producer ended (it failed, or it stopped just
                        # as we joined): join a fresh one and replay from our position.
                        restart = not self.draining
                        break
                    if item is _LAGGING:
                        if drop_lagging:
                            yield Lagging(position)
                            return
                        restart = True
                        break
                    if item.seq <= position:
                        continue
                    if item.seq > position + 1:
                        # Defensive: fill any gap from the store.
                        gap = item.seq - position - 1
                        for missed in await self.store.events_after(stream, position, gap):
                            position = missed.seq
                            yield missed
                            if until is not None and until(missed):
                                return
                    position = item.seq
                    yield item
                    if until is not None and until(item):
                        return
                if not restart or self.draining:
                    return
                tail.leave(queue)
                tail = None
        finally:
            if tail is not None:
                tail.leave(queue)
            self._open_streams -= 1
            if self._open_streams == 0:
                self._drained.set()

    def dropped(self) -> None:
        if self._metrics is not None:
            self._metrics.subscribers_dropped.inc()

    async def _join(self, stream: str, queue: _Inbox) -> _Tail:
        """Add ``queue`` to the stream's single producer, starting one if there is none."""
        tail = self._tails.get(stream)
        if tail is None or tail.task.done():
            position = await self.store.last_seq(stream)
            # Another subscriber may have started one while we read the position.
            tail = self._tails.get(stream)
            if tail is None or tail.task.done():
                tail = _Tail(self, stream, position)
                self._tails[stream] = tail
        tail.subscribers.add(queue)
        return tail

    @property
    def open_streams(self) -> int:
        return self._open_streams

    async def drain(self, timeout: float) -> None:
        """Make every open stream send its final event and end."""
        self.draining = True
        self._drained.clear()
        for tail in list(self._tails.values()):
            tail.wake.set()
            for q in tail.subscribers:
                q.put_nowait(_STOP)
        if self._open_streams:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)

    async def close(self) -> None:
        self.draining = True
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        for tail in list(self._tails.values()):
            tail.task.cancel()
        for tail in list(self._tails.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await tail.task
        self._tails.clear()


# -- HTTP encodings ---------------------------------------------------------------------------


@dataclass
class StreamRequest:
    """What a client asked of a stream: the format and where to start."""

    format: str  # "sse" | "jsonl" | "json"
    after: int
    limit: int


def parse_stream_request(request: Request, page_limit_max: int = 1000) -> StreamRequest:
    args = request.args
    fmt = args.get("format")
    accept = request.headers.get("Accept", "")
    if fmt is None:
        if JSONL in accept:
            fmt = "jsonl"
        elif "application/json" in accept and SSE not in accept:
            fmt = "json"
        elif "limit" in args:
            fmt = "json"
        else:
            fmt = "sse"
    if fmt not in ("sse", "jsonl", "json"):
        raise GatewayError(400, "invalid_format", "format must be one of sse, jsonl, json")
    after = _int_arg(args.get("after"), "after", 0)
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is not None and "after" not in args:
        after = _int_arg(last_event_id, "Last-Event-ID", 0)
    limit = _int_arg(args.get("limit"), "limit", 100)
    if not 1 <= limit <= page_limit_max:
        raise GatewayError(400, "invalid_limit", f"limit must be between 1 and {page_limit_max}")
    return StreamRequest(fmt, after, limit)


def _int_arg(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise GatewayError(400, "invalid_parameter", f"{name} must be an integer") from None
    if value < 0:
        raise GatewayError(400, "invalid_parameter", f"{name} must be >= 0")
    if value > MAX_SEQ:
        raise GatewayError(400, "invalid_parameter", f"{name} must be <= {MAX_SEQ}")
    return value


def _sse(event: Event) -> bytes:
    data = json.dumps(event.as_dict(), separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


def _jsonl(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


async def stream_response(
    hub: EventHub,
    request: Request,
    stream: str,
    *,
    until: Callable[[Event], bool] | None = None,
) -> Response:
    """Answer a stream request in the format the client asked for."""
    sr = parse_stream_request(request, hub.page_limit_max)
    if sr.format == "json":
        events = await hub.store.events_after(stream, sr.after, sr.limit + 1)
        more = len(events) > sr.limit
        events = events[: sr.limit]
        page = {
            "stream": stream,
            "events": [e.as_dict() for e in events],
            "next_after": events[-1].seq if events else sr.after,
            "has_more": more,
        }
        return Response(json.dumps(page), content_type="application/json")
    if hub.draining:
        raise GatewayError(503, "draining", "the gateway is shutting down")

    sse = sr.format == "sse"
    watch = credential_watch(request, g.get("principal"))

    async def body() -> AsyncIterator[bytes]:
        if sse:
            yield f"retry: 2000\n: stream {stream} after {sr.after}\n\n".encode()
        # aclosing: a client that goes away leaves the subscription at once, not at GC.
        async with (
            contextlib.aclosing(hub.follow(stream, sr.after, until)) as events,
            contextlib.aclosing(_watched(events, watch)) as watched,
        ):
            async for event in watched:
                if event is _REVOKED:
                    yield _closing("unauthorized", sse)
                    return
                if event is None:
                    yield (
                        b": heartbeat\n\n"
                        if sse
                        else _jsonl({"type": "heartbeat", "ts_ms": now_ms()})
                    )
                elif isinstance(event, Event):
                    yield _sse(event) if sse else _jsonl(event.as_dict())
                elif isinstance(event, Truncated):
                    yield _truncated(event, sse)
                elif isinstance(event, Lagging):
                    yield _lagging(event, sse)
                    return
        if hub.draining:
            yield _closing("gateway shutting down", sse)

    return live_response(body(), SSE if sse else JSONL)


def _notice(kind: str, body: dict[str, Any], sse: bool) -> bytes:
    """A message that is no stored event: no ``id:`` line, so a client's
    ``Last-Event-ID`` stays at the last event it got."""
    if sse:
        return f"event: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()
    return _jsonl(body)


def _truncated(notice: Truncated, sse: bool) -> bytes:
    body = {
        "type": "stream.truncated",
        "after": notice.after,
        "pruned_through": notice.pruned_through,
        "message": (
            f"events {notice.after + 1} to {notice.pruned_through} of this stream were "
            "removed by retention; the stream goes on from the next one kept"
        ),
        "ts_ms": now_ms(),
    }
    return _notice("stream.truncated", body, sse)


def _lagging(notice: Lagging, sse: bool) -> bytes:
    """The final ``error`` message of a stream whose reader fell too far behind."""
    body = {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "code": "subscriber_lagging",
            "message": (
                "this stream's reader fell too far behind the live events "
                f"(events.subscriber_queue_max) and was dropped; reconnect with "
                f"Last-Event-ID: {notice.last_seq} to go on without a gap"
            ),
        },
        "last_seq": notice.last_seq,
        "ts_ms": now_ms(),
    }
    return _notice("error", body, sse)


def _closing(reason: str, sse: bool) -> bytes:
    """The final ``stream.closing`` event of a stream the gateway ends."""
    final = {"type": "stream.closing", "reason": reason, "ts_ms": now_ms()}
    if sse:
        return f"event: stream.closing\ndata: {json.dumps(final)}\n\n".encode()
    return _jsonl(final)


async def _watched(
    items: AsyncGenerator[T, None], watch: CredentialWatch | None
) -> AsyncGenerator[T | object, None]:
    """``items``, until the connection's credential no longer stands: then ``_REVOKED``
    and the end. The credential is checked whenever it is due, also while waiting for the
    next item, whose read a check does not interrupt."""
    if watch is None:
        async for item in items:
            yield item
        return
    async with contextlib.aclosing(with_ticks(items, watch.seconds_to_due, _TICK)) as ticked:
        async for item in ticked:
            if watch.due() and not await watch.valid():
                yield _REVOKED
                return
            if item is not _TICK:
                yield item


def live_response(
    body: AsyncIterator[bytes], content_type: str, slot: StreamSlot | None = None
) -> Response:
    """A streamed answer of ``body``: not cached, not buffered by a reverse proxy (nginx
    reads ``X-Accel-Buffering``), no response timeout. For every event stream, the
    host's and plugins' (the OpenAI surfaces' SSE). It holds one of the caller's stream
    slots (``events.max_streams_per_principal``) until it ends: ``slot`` if the view
    took it earlier with :func:`stream_slot`, else one taken now (429
    ``too_many_streams`` past the cap)."""
    if slot is None:
        slot = stream_slot()
    response = Response(SlotBody(body, slot), content_type=content_type)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.timeout = None
    return response


def stream_slot() -> StreamSlot:
    """A stream slot of the current request's principal, for a view that must know
    before it starts work (calls an upstream) that its stream may open; raises 429
    ``too_many_streams`` past ``events.max_streams_per_principal``. Pass it to
    :func:`live_response`; if the view fails before that, release it (or let it go:
    it is released when collected). A public route's slot counts for nobody."""
    principal = g.get("principal") if has_request_context() else None
    if principal is None:
        return StreamSlot(None, "")
    from host.context import context  # host.context imports this module

    return context().hub.slots.acquire(principal.key)
