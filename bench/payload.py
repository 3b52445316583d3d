"""The JSON body both benchmark routes return: about the size of a /gateway/status reply."""

from __future__ import annotations

from typing import Any

PAYLOAD: dict[str, Any] = {
    "service": "agent-gateway",
    "version": "0.1.0",
    "state": "running",
    "uptime_seconds": 12.345,
    "started_unix_ms": 1_700_000_000_000,
    "auth": {
        "mode": "token",
        "session_ttl_seconds": 43200,
        "active_sessions": 0,
        "auth_failures": 0,
        "rate_limited_requests": 0,
        "principal": {"name": "bench", "kind": "token", "gates": ["*"]},
    },
    "plugins": [
        {"name": "control", "enabled": True, "source": "builtin"},
        {"name": "hello", "enabled": True, "source": "entrypoint"},
        {"name": "bench", "enabled": True, "source": "extra"},
    ],
    "store": {"dialect": "sqlite", "state_dir": "/tmp/bench/state", "schema_versions": {"host": 1}},
    "streams": {"open": 0},
    "gateway": {
        "status_endpoint": "/gateway/status",
        "ws_endpoint": "/gateway/ws",
        "metrics_endpoint": "/metrics",
        "openapi_endpoint": "/openapi.json",
    },
}

ROUTE = "/bench/ping"
