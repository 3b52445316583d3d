"""Safety decisions by stage, action and reason code, on the app's own registry. Counted
from the ``safety`` event stream, so each published decision counts once (a stream's
rescans publish each finding once) whichever scanner made it."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter


class SafetyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "gateway_safety_decisions",
            "Safety decisions other than clean, by stage, action and reason code",
            ["stage", "action", "reason_code"],
            registry=registry,
        )

    def count(self, action: str, data: dict[str, Any]) -> None:
        stage = str(data.get("stage") or "unknown")
        codes = set(data.get("reason_codes") or ())
        for finding in data.get("findings") or ():
            if not finding.get("reason_codes"):  # a scanner without codes: its name
                codes.add(str(finding.get("scanner") or "unknown"))
        for code in sorted(codes) or ["unknown"]:
            self.decisions.labels(stage, action, code).inc()
