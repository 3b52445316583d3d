"""The bodies of every event stream's JSON forms: one event, and a page of them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class EventRecord(BaseModel):
    stream: str
    seq: int
    type: str
    ts_ms: int
    data: dict[str, Any]


class EventPage(BaseModel):
    """The JSON page form of an event stream; the same route also speaks SSE
    (``text/event-stream``, ``id:`` = seq) and JSONL (``application/x-ndjson``)."""

    stream: str
    events: list[EventRecord]
    next_after: int
    has_more: bool
