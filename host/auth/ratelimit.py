"""Token buckets, one per key (principal or client address), in a bounded LRU."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from host.settings import RateLimit


class TokenBucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, limit: RateLimit) -> None:
        self.capacity = float(limit.capacity)
        self.rate = limit.per_minute / 60.0
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self, now: float) -> float:
        """Take one token; returns 0 when allowed, else seconds until one is available."""
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def peek_exhausted(self, now: float) -> float:
        """Seconds until a token is available, without taking one (0 when available)."""
        tokens = min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class RateLimiter:
    """Buckets by key. A bucket is rebuilt when its key's limit changes (config reload)."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[RateLimit, TokenBucket]] = OrderedDict()

    def _bucket(self, key: str, limit: RateLimit) -> TokenBucket:
        entry = self._buckets.get(key)
        # Identity first: the same settings object on every request until a reload.
        if entry is None or (entry[0] is not limit and entry[0] != limit):
            bucket = TokenBucket(limit)
            self._buckets[key] = (limit, bucket)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return bucket
        self._buckets.move_to_end(key)
        return entry[1]

    def hit(self, key: str, limit: RateLimit) -> int:
        """Count a request; returns 0 when allowed, else Retry-After seconds (>= 1)."""
        wait = self._bucket(key, limit).take(time.monotonic())
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def blocked(self, key: str, limit: RateLimit) -> int:
        """Retry-After seconds if ``key`` has no token left, else 0; takes nothing."""
        entry = self._buckets.get(key)
        if entry is None or entry[0] != limit:
            return 0
        wait = entry[1].peek_exhausted(time.monotonic())
        return 0 if wait == 0 else max(1, math.ceil(wait))
