"""What the alerts count over a recent window, in this process: safety blocks (the
``safety.block`` events the dashboard observes) and failed model calls (the
``gateway_llm_requests_total{outcome="error"}`` counter of the app's metrics, which the
openai_compat plugin keeps). Per process: behind a load balancer each replica alerts on
what it saw."""

from __future__ import annotations

import bisect
from collections import deque

from host.api import GatewayContext, now_ms

PROVIDER_METRIC = "gateway_llm_requests"


class Signals:
    def __init__(self, started_ms: int) -> None:
        self.blocks: deque[int] = deque(maxlen=100_000)
        # (when, failed model calls so far): the counter starts at 0 with the process.
        self.errors: deque[tuple[int, float]] = deque([(started_ms, 0.0)], maxlen=10_000)

    def blocked(self, ts_ms: int) -> None:
        self.blocks.append(ts_ms)

    def blocks_since(self, since_ms: int) -> tuple[int, int | None]:
        """Blocks at or after ``since_ms``, and the first of them."""
        times = list(self.blocks)
        at = bisect.bisect_left(times, since_ms)
        recent = times[at:]
        return len(recent), (recent[0] if recent else None)

    def errors_since(self, ctx: GatewayContext, since_ms: int) -> tuple[float, int | None]:
        """Failed model calls since ``since_ms`` (from the samples this keeps of the
        counter), and when the first sample showing one of them was taken."""
        total = provider_errors(ctx)
        now = now_ms()
        if total != self.errors[-1][1]:
            self.errors.append((now, total))
        baseline = self.errors[0]
        for sample in self.errors:
            if sample[0] <= since_ms:
                baseline = sample
        first = next((t for t, v in self.errors if t > since_ms and v > baseline[1]), None)
        return total - baseline[1], first


def provider_errors(ctx: GatewayContext) -> float:
    total = 0.0
    for family in ctx.metrics.registry.collect():
        if family.name != PROVIDER_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") == "error":
                total += sample.value
    return total
