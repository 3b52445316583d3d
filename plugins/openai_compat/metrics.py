"""Model-call metrics, on the app's own CollectorRegistry."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class LLMMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gateway_llm_requests",
            "Model requests by model, provider, API and outcome",
            ["model", "provider", "api", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "gateway_llm_request_duration_seconds",
            "Time from request to the last byte of the answer",
            ["model", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "gateway_llm_time_to_first_token_seconds",
            "Streaming: time from request to the first content delta",
            ["model", "provider"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "gateway_llm_tokens",
            "Tokens in (prompt) and out (completion), as the provider reports them",
            ["model", "provider", "direction"],
            registry=registry,
        )

        # Labelled by principal: the configured ones only (others are "other").
        self.principal_requests = Counter(
            "gateway_llm_principal_requests",
            "Model requests by principal and the model that answered",
            ["principal", "model"],
            registry=registry,
        )
        self.principal_tokens = Counter(
            "gateway_llm_principal_tokens",
            "Tokens by principal, model and direction (in, out); estimated ones included",
            ["principal", "model", "direction"],
            registry=registry,
        )
        self._label_children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.deployment_up = Gauge(
            "gateway_llm_deployment_up",
            "1 while a model's deployment takes calls, 0 while it is cooled down",
            ["model", "deployment"],
            registry=registry,
        )
        self.deployment_failures = Counter(
            "gateway_llm_deployment_failures",
            "Calls a deployment failed (connect error, 5xx, 429), each cooling it down",
            ["model", "deployment"],
            registry=registry,
        )

    def count_principal(self, principal: str, model: str, spent: Any) -> None:
        # Both label sets are bounded: configured principals and models.
        self.child(self.principal_requests, principal, model).inc()
        if spent.input_tokens:
            self.child(self.principal_tokens, principal, model, "in").inc(spent.input_tokens)
        if spent.output_tokens:
            self.child(self.principal_tokens, principal, model, "out").inc(spent.output_tokens)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once (``labels()`` takes a lock and builds
        a key; it costs more than the increment): every label set here is bounded
        (configured principals, models, providers, deployments, APIs, outcomes)."""
        key = (id(metric), labels)
        found = self._label_children.get(key)
        if found is None:
            found = self._label_children[key] = metric.labels(*labels)
        return found

    def deployment(self, model: str, deployment: Any, event: str) -> None:
        """The router's observer (routing.Observer)."""
        if event == "failed":
            self.child(self.deployment_failures, model, deployment.label).inc()
        self.child(self.deployment_up, model, deployment.label).set(0 if event == "failed" else 1)

    def finished(self, labels: tuple[str, str], api: str, outcome: str, started: float) -> None:
        """A model call ended (``ok``, ``error`` or ``cancelled``), ``started`` being its
        ``time.perf_counter()`` at the request: counted, and its duration observed,
        whatever the outcome."""
        self.child(self.requests, *labels, api, outcome).inc()
        self.child(self.latency, *labels).observe(time.perf_counter() - started)

    def count_usage(self, model: str, provider: str, usage: dict[str, int] | None) -> None:
        if not usage:
            return
        self.child(self.tokens, model, provider, "in").inc(usage.get("prompt_tokens") or 0)
        self.child(self.tokens, model, provider, "out").inc(usage.get("completion_tokens") or 0)


class ModelCall:
    """The metrics of one model call, from now: labelled by model and provider, counted
    under ``api`` (``chat``, ``completions``, ``responses``) once it ends."""

    def __init__(self, metrics: LLMMetrics, model: str, provider: str, api: str) -> None:
        self.metrics = metrics
        self.labels = (model, provider)
        self.api = api
        self.started = time.perf_counter()

    def first_token(self) -> None:
        """The first content arrived (streaming): time to first token observed."""
        ttft = self.metrics.child(self.metrics.ttft, *self.labels)
        ttft.observe(time.perf_counter() - self.started)

    def usage(self, usage: dict[str, int] | None) -> None:
        self.metrics.count_usage(*self.labels, usage)

    def finished(self, outcome: str) -> None:
        """The call ended: ``ok``, ``error`` or ``cancelled``."""
        self.metrics.finished(self.labels, self.api, outcome, self.started)
