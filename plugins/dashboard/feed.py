"""The change notices behind ``GET /dashboard/stream``.

Every event the gateway stores (``gateway_on_event``) that changes what the dashboard
shows becomes a notice ``{"topic", "type"}`` with a sequence number of this process: no
ids, no payload, so a notice tells a principal nothing it may not read; the page
re-reads the data APIs (filtered for it) on a notice. The last ``stream_buffer`` notices
are kept for ``Last-Event-ID`` resume; a client further behind, or new, gets a snapshot.
Notices are per process: behind a load balancer each replica's stream carries the
events its own process saw (the snapshot on connect is always complete).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from host.api import Event, now_ms

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
    for prefix, topic in TOPICS.items():
        if event.type.startswith(prefix):
            return topic
    return None


class Feed:
    def __init__(self, size: int) -> None:
        self.items: deque[dict[str, Any]] = deque(maxlen=size)
        self.seq = 0
        self._changed = asyncio.Condition()

    async def push(self, topic: str, type_: str) -> None:
        self.seq += 1
        self.items.append({"seq": self.seq, "topic": topic, "type": type_, "ts_ms": now_ms()})
        async with self._changed:
            self._changed.notify_all()

    def after(self, seq: int) -> list[dict[str, Any]] | None:
        """The notices after ``seq``; None when some of them are no longer kept (or
        ``seq`` is from another process's numbering: ahead of ours)."""
        if seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self.items or self.items[0]["seq"] > seq + 1:
            return None
        return [item for item in self.items if item["seq"] > seq]

    async def wait(self, seq: int, timeout: float) -> None:
        """Until there is a notice after ``seq``, or ``timeout`` seconds."""
        if self.seq > seq:
            return
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.seq > seq)
        except TimeoutError:
            return
