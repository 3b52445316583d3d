"""The pipelines plugin's metrics (those of step threads and step processes are in
``execution.py``), in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Gauge(
            "gateway_pipeline_runs",
            "Runs by state and pipeline",
            ["state", "pipeline"],
            registry=registry,
        )
        self.finished = Counter(
            "gateway_pipeline_runs_finished",
            "Runs that reached a terminal state",
            ["pipeline", "status"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "gateway_pipeline_step_duration_seconds",
            "Step duration by pipeline, kind and outcome",
            ["pipeline", "kind", "outcome"],
            registry=registry,
        )
        self.schedule_fires = Counter(
            "gateway_pipeline_schedule_fires",
            "Schedule ticks by outcome (fired, skipped_paused, skipped_overlap, missed, ...)",
            ["outcome"],
            registry=registry,
        )
        self.approvals_pending = Gauge(
            "gateway_pipeline_approvals_pending",
            "Approvals waiting for a decision",
            registry=registry,
        )
