"""Plain records the store returns."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Event:
    """One entry of an append-only stream. ``seq`` increases by one per stream."""

    stream: str
    seq: int
    type: str
    ts_ms: int
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "seq": self.seq,
            "type": self.type,
            "ts_ms": self.ts_ms,
            "data": self.data,
        }


@dataclass(frozen=True)
class AuthSession:
    token_hash: str
    principal: str
    created_ms: int
    expires_ms: int
    revoked_ms: int | None
    client: str | None
    credential_fp: str | None = None

    def active(self, at_ms: int) -> bool:
        return self.revoked_ms is None and self.expires_ms > at_ms
