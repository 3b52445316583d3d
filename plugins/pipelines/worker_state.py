"""What the parts of one process's engine share about its worker: its id (the lease
owner of the runs it claims), the tasks of its runs in progress, and how to make its loop
come round (``wake``: a run to claim; ``due_at``: an approval timeout or a schedule tick
stored by this process, so it is acted on at its time rather than at the next poll)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


class WorkerState:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.wake = asyncio.Event()
        # When the next approval timeout and schedule tick fall due (wall ms; ``None``:
        # nothing known to fall due), as the loop last read them or was told.
        self.expiry_due_ms: int | None = None
        self.schedule_due_ms: int | None = None

    def due_at(self, *, expiry_ms: int | None = None, schedule_ms: int | None = None) -> None:
        """Tell the loop about an approval timeout or a schedule tick stored by this
        process, so it comes due at its time rather than at the next poll."""
        if expiry_ms is not None:
            self.expiry_due_ms = min(expiry_ms, self.expiry_due_ms or expiry_ms)
        if schedule_ms is not None:
            self.schedule_due_ms = min(schedule_ms, self.schedule_due_ms or schedule_ms)
        self.wake.set()

    def stop_tasks(self, run_ids: Sequence[str]) -> None:
        # A run whose task ended meanwhile has left self.tasks already: nothing to stop.
        for run_id in run_ids:
            task = self.tasks.get(run_id)
            if task is not None:
                task.cancel()
