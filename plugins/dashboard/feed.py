"""The change notices behind ``GET /dashboard/stream``, shared by every replica.

Every event the gateway stores (``gateway_on_event``) that changes what the dashboard
shows becomes a notice ``{"topic", "type"}``: no ids, no payload, so a notice tells a
principal nothing it may not read; the page re-reads the data APIs (filtered for it) on
a notice. Notices are events of the store's ``dashboard.notices`` stream, so a stream
opened on any replica carries the changes made on every replica (the store's event
streams fan out across processes: LISTEN/NOTIFY on PostgreSQL, polling as the
fallback), and their ``seq`` is the ``Last-Event-ID`` on all of them. The last
``stream_buffer`` notices are kept for resume (``gateway_prune``); a client further
behind, or new, gets a snapshot.

The observer only marks a topic changed: a background writer stores one notice per
changed topic, at most every ``COALESCE_SECONDS``, so a burst of run events costs a few
rows and never slows the publisher down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from host.api import Event, GatewayContext

log = logging.getLogger("gateway.dashboard")

NOTICES = "dashboard.notices"
NOTICE = "dashboard.notice"  # on NOTICES, which topic_of leaves out
COALESCE_SECONDS = 0.1

# Event type prefixes and the panel each changes.
TOPICS = {
    "run.": "runs",
    "approval.": "approvals",
    "gateway.": "gateway",
    "schedule.": "runs",
    "dashboard.": "alerts",
    "audit.": "audit",
    "safety.block": "alerts",
}


def topic_of(event: Event) -> str | None:
    if event.stream == NOTICES:
        return None
    for prefix, topic in TOPICS.items():
        if event.type.startswith(prefix):
            return topic
    return None


def notice_of(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "ts_ms": event.ts_ms, **event.data}


class Feed:
    def __init__(self, ctx: GatewayContext, size: int) -> None:
        self.ctx = ctx
        self.size = size
        self._dirty: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._flush()

    def mark(self, topic: str, type_: str) -> None:
        """``topic`` changed (an event of type ``type_``): noticed within
        ``COALESCE_SECONDS`` on every replica's streams."""
        self._dirty[topic] = type_
        self._wake.set()

    async def push(self, topic: str, type_: str) -> int:
        """A notice stored now (an explicit refresh); its ``seq``."""
        event = await self.ctx.hub.publish(
            NOTICES, NOTICE, {"topic": topic, "type": type_}, observe=False
        )
        return event.seq

    async def _flush(self) -> None:
        batch, self._dirty = self._dirty, {}
        for topic, type_ in batch.items():
            await self.push(topic, type_)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:  # a store hiccup must not end the notices for good
                log.exception("storing dashboard notices failed")
            await asyncio.sleep(COALESCE_SECONDS)

    async def head(self) -> int:
        """The ``seq`` of the newest notice (of any replica)."""
        return await self.ctx.store.last_seq(NOTICES)

    async def kept_after(self, seq: int) -> bool:
        """Whether every notice after ``seq`` is still kept (else: a snapshot)."""
        head = await self.head()
        return seq <= head and head - seq <= self.size

    async def follow(self, after: int) -> AsyncGenerator[Event | None, None]:
        """The notices after ``after``, stored then live; ``None`` as a heartbeat tick.
        Ends when the gateway drains."""
        async with contextlib.aclosing(self.ctx.hub.subscribe(NOTICES, after)) as events:
            async for event in events:
                yield event
