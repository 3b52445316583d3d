"""A nightly report on a cron schedule (``0 3 * * *``, Europe/Berlin).

Pipelines do not schedule themselves: add the schedule once (it is stored) with
``POST /schedules`` and the body in ``SCHEDULE`` plus ``"pipeline_id": "nightly-report"``.
"""

from __future__ import annotations

import time
from typing import Any

from plugins.pipelines.definition import Pipeline, code

SCHEDULE = {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "overlap": "skip"}


def collect(ctx: Any) -> dict[str, Any]:
    return {"generated_unix": int(time.time()), "items": 3}


def summarize(ctx: Any) -> dict[str, str]:
    return {"summary": f"{ctx.results['collect']['items']} items collected"}


PIPELINE = Pipeline(
    id="nightly-report",
    description="Collect and summarize; intended for a nightly cron schedule",
    steps=[code("collect", collect), code("summarize", summarize)],
)
