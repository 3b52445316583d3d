"""Operator actions on a run (the API's resume, approve and deny, release and cancel, and
the worker's approval timeouts): each checks the run's row and changes the store in one
write transaction with the events it reports, then wakes the worker, which continues (or
stops) the run."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayError, now_ms, validation_message
from plugins.pipelines.approval_queue import cancel_for_run
from plugins.pipelines.definition import Pipeline
from plugins.pipelines.metrics import PipelineMetrics
from plugins.pipelines.run_definitions import DefinitionChanged, RunDefinitions
from plugins.pipelines.runs import TERMINAL, jsonable, run_row
from plugins.pipelines.tables import approvals, runs
from plugins.pipelines.writer import RunWriter, Written


class OperatorActions:
    def __init__(
        self, writer: RunWriter, definitions: RunDefinitions, metrics: PipelineMetrics
    ) -> None:
        self.writer = writer
        self.definitions = definitions
        self.metrics = metrics

    async def _operator_write(
        self,
        run_id: str,
        write: Callable[[AsyncConnection, Any], Awaitable[Written]],
        committed: Callable[[Any], None] | None = None,
    ) -> None:
        """An operator action on a run (approve, resume, release, cancel): in one write
        transaction, ``write(conn, row)`` checks the run's row (404 unknown run) and
        changes the store, returning the events to append with it; once committed,
        ``committed(row)`` runs, then the events are published and the worker is woken."""
        store = self.writer.store
        async with store.write() as conn:
            # The row locked first (FOR UPDATE on PostgreSQL; SQLite's write lock is held
            # already): two replicas deciding on one run at once take turns, and the
            # second reads the first's outcome (409), instead of both deciding.
            await conn.execute(store.dialect.lock(sa.select(runs.c.id).where(runs.c.id == run_id)))
            row = await run_row(conn, run_id)
            events = await self.writer.append(conn, run_id, await write(conn, row))
        if committed is not None:
            committed(row)
        await self.writer.notify(events)
        self.writer.worker.wake.set()

    async def resolve_approval(
        self,
        run_id: str,
        decision: str | None,
        approver: str,
        reason: str | None,
        timed_out: bool = False,
    ) -> None:
        """Approve (``approved``), deny (``denied``) or, with ``None``, fail a run waiting
        at an approval gate. 404 unknown run; 409 not waiting for approval."""
        now = now_ms()
        status = decision or "timed_out"

        async def write(conn: AsyncConnection, row: Any) -> Written:
            step_id = waiting_step(row, "approval", "an approval")
            await conn.execute(
                approvals.update()
                .where(approvals.c.run_id == run_id, approvals.c.step_id == step_id)
                .values(status=status, resolved_ms=now, approver=approver, reason=reason)
            )
            resolved = (
                "approval.resolved",
                {
                    "step": step_id,
                    "decision": status,
                    "approver": approver,
                    "reason": reason,
                    "timed_out": timed_out,
                },
            )
            if decision is not None:
                resolution = {
                    "decision": decision,
                    "approver": approver,
                    "reason": reason,
                    "at_ms": now,
                }
                return [
                    resolved,
                    await self._resumed(conn, row, step_id, resolution, approver, now),
                ]
            error = {"message": f"approval {step_id!r} timed out", "step": step_id}
            await end_run(conn, run_id, "failed", error, now)
            return [resolved, ("run.failed", {"error": error})]

        def failed(row: Any) -> None:  # counted once the failure is stored
            self.metrics.finished.labels(row.pipeline_id, "failed").inc()

        await self._operator_write(run_id, write, failed if decision is None else None)

    async def _resumed(
        self,
        conn: AsyncConnection,
        row: Any,
        step_id: str,
        resolution: dict[str, Any],
        by: str,
        now: int,
    ) -> tuple[str, dict[str, Any]]:
        """Store how a waiting step was resolved and queue the run again (its worker
        continues at that step); returns the ``run.resumed`` event to append."""
        resolutions = {**(row.resolutions or {}), step_id: resolution}
        await conn.execute(
            runs.update()
            .where(runs.c.id == row.id)
            .values(status="pending", waiting_for=None, resolutions=resolutions, updated_ms=now)
        )
        return "run.resumed", {"step": step_id, "by": by}

    async def resume(self, run_id: str, raw_input: Any, by: str) -> None:
        """Give a run waiting at a ``wait`` step its input (validated against the step's
        schema: 422 naming the field, and the run still waits)."""
        now = now_ms()

        async def write(conn: AsyncConnection, row: Any) -> Written:
            step_id = waiting_step(row, "input", "input")
            try:
                pipeline: Pipeline | None = await self.definitions.for_run(conn, row)
            except DefinitionChanged:
                pipeline = None  # the run fails with definition_changed when it goes on
            # A nested step's path ends with its id (``count[1].reply``).
            step = pipeline.step(step_id.rsplit(".", 1)[-1]) if pipeline is not None else None
            schema = step.config.get("schema") if step is not None else None
            value = raw_input
            if schema is not None:
                try:
                    value = jsonable(schema.model_validate(raw_input))
                except ValidationError as exc:
                    message, param = validation_message(exc, "input.")
                    raise GatewayError(
                        422, "validation_failed", message, details={"param": param}
                    ) from None
            resolution = {"input": value, "by": by, "at_ms": now}
            return [await self._resumed(conn, row, step_id, resolution, by, now)]

        await self._operator_write(run_id, write)

    async def release(self, run_id: str, by: str) -> None:
        async def write(conn: AsyncConnection, row: Any) -> Written:
            if row.status != "paused":
                raise GatewayError(409, "not_paused", f"run {run_id} is {row.status}, not paused")
            await conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status="pending",
                    released_step=row.paused_at,
                    paused_at=None,
                    updated_ms=now_ms(),
                )
            )
            return [("run.released", {"step": row.paused_at, "by": by})]

        await self._operator_write(run_id, write)

    async def cancel(self, run_id: str, by: str, reason: str | None) -> None:
        now = now_ms()
        withdrawn: list[Any] = []

        async def write(conn: AsyncConnection, row: Any) -> Written:
            if row.status in TERMINAL:
                raise GatewayError(409, "run_finished", f"run {run_id} is already {row.status}")
            error = {"message": "cancelled", "by": by, "reason": reason}
            await end_run(
                conn, run_id, "cancelled", error, now, lease_owner=None, lease_expires_ms=None
            )
            await conn.execute(
                approvals.update()
                .where(approvals.c.run_id == run_id, approvals.c.status == "pending")
                .values(status="cancelled", resolved_ms=now)
            )
            store = self.writer.store
            withdrawn.extend(await cancel_for_run(conn, store, run_id, "the run was cancelled"))
            return [("run.cancelled", {"by": by, "reason": reason})]

        def cancelled(row: Any) -> None:
            task = self.writer.worker.tasks.get(run_id)
            if task is not None:
                task.cancel()
            self.metrics.finished.labels(row.pipeline_id, "cancelled").inc()

        await self._operator_write(run_id, write, cancelled)
        await self.writer.notify(withdrawn)

    async def expire_approvals(self) -> None:
        """Resolve the approvals whose timeout passed by their ``on_timeout``, and note
        when the next one falls due."""
        now = now_ms()
        async with self.writer.store.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(approvals).where(
                        approvals.c.status == "pending", approvals.c.expires_ms <= now
                    )
                )
            ).all()
            self.writer.worker.expiry_due_ms = (
                await conn.execute(
                    sa.select(sa.func.min(approvals.c.expires_ms)).where(
                        approvals.c.status == "pending", approvals.c.expires_ms > now
                    )
                )
            ).scalar()
        for row in rows:
            decision = {"fail": None, "approve": "approved", "deny": "denied"}[row.on_timeout]
            with contextlib.suppress(GatewayError):
                await self.resolve_approval(
                    row.run_id, decision, "timeout", "approval timed out", timed_out=True
                )


async def end_run(
    conn: AsyncConnection, run_id: str, status: str, error: Any, now: int, **values: Any
) -> None:
    """Store an operator action's end of a run (``failed``, ``cancelled``)."""
    await conn.execute(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            status=status,
            error=error,
            waiting_for=None,
            finished_ms=now,
            updated_ms=now,
            **values,
        )
    )


def waiting_step(row: Any, kind: str, what: str) -> str:
    """The step the run waits at, or 409 ``not_waiting_for_<kind>``."""
    waiting = row.waiting_for or {}
    if row.status != "waiting" or waiting.get("type") != kind:
        raise GatewayError(
            409, f"not_waiting_for_{kind}", f"run {row.id} is {row.status}, not waiting for {what}"
        )
    step: str = waiting["step"]
    return step
