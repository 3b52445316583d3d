"""The pipelines plugin's routes, one module per resource, on one blueprint: pipelines,
runs, approvals, debug (breakpoints), triggers (with webhooks) and schedules. Handlers
parse the request and call the plugin's API (``api.py``)."""

from __future__ import annotations

from plugins.pipelines.api import CATALOG_KEY
from plugins.pipelines.gates import GATE_ACT_ALL, GATE_APPROVE, GATE_READ_ALL, GATE_RUN
from plugins.pipelines.routes import approvals, debug, pipelines, runs, schedules, triggers
from plugins.pipelines.routes.common import bp

__all__ = [
    "CATALOG_KEY",
    "GATE_ACT_ALL",
    "GATE_APPROVE",
    "GATE_READ_ALL",
    "GATE_RUN",
    "approvals",
    "bp",
    "debug",
    "pipelines",
    "runs",
    "schedules",
    "triggers",
]
