"""The audit plugin's metrics, in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "gateway_audit_records",
            "Audit records stored, by source (request, auth, safety, approval, ...)",
            ["source"],
            registry=registry,
        )
        self.write_failures = Counter(
            "gateway_audit_write_failures",
            "Audit records that could not be stored (each is also logged)",
            registry=registry,
        )
