"""The sessions plugin's metrics, in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class SessionsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions_created = Counter(
            "gateway_sessions_created",
            "Sessions created, by source (api, chat, responses, pipeline, ...)",
            ["source"],
            registry=registry,
        )
        self.messages = Counter(
            "gateway_session_messages",
            "Messages appended to sessions, by the session's source and the role",
            ["source", "role"],
            registry=registry,
        )
        self.memory_writes = Counter(
            "gateway_memory_writes",
            "Memory writes: entries created, replaced, deleted, restored; documents",
            ["op"],
            registry=registry,
        )
        self.search_seconds = Histogram(
            "gateway_memory_search_duration_seconds",
            "Ranked memory searches (full-text query and blend), by store",
            ["store"],
            buckets=_SEARCH_BUCKETS,
            registry=registry,
        )
