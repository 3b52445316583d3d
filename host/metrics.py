"""Prometheus metrics: one CollectorRegistry per app (never the global one)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to produce response headers, by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_http_requests_in_flight", "Requests being handled", registry=r
        )
        self.auth_failures = Counter(
            "gateway_auth_failures", "Failed authentication attempts", ["reason"], registry=r
        )
        self.password_checks = Counter(
            "gateway_password_checks",
            "Password verifications (scrypt) run for logins, by result",
            ["result"],
            registry=r,
        )
        self.rate_limited = Counter(
            "gateway_rate_limited_requests", "Requests refused with 429", ["scope"], registry=r
        )
        self.gate_denied = Counter(
            "gateway_policy_gate_denials", "Requests refused by a policy gate", ["gate"], registry=r
        )
        self.open_streams = Gauge(
            "gateway_event_streams_open", "Open event-stream subscriptions", registry=r
        )
        self.ws_connections = Gauge(
            "gateway_websocket_connections", "Open WebSocket connections", registry=r
        )
        self.subscribers_dropped = Counter(
            "gateway_event_subscribers_dropped",
            "Event-stream readers dropped for falling too far behind (subscriber_lagging)",
            registry=r,
        )
        self.pruned = Counter(
            "gateway_retention_pruned_rows",
            "Rows removed by retention, by plugin and kind",
            ["plugin", "kind"],
            registry=r,
        )

        # Labelled children cached per label set: labels() costs a lock and a dict build.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
