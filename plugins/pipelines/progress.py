"""A run's progress as the engine stores it, each write fenced (``writer.py``) and with its
events: the step journal (every step by its path, ``review.approve`` or
``count[2].tick``: its attempts, written before each one, its stored decisions, and once
finished its outcome, which a resumed run replays instead of running the step again), a
finished step's result row, and the run's moves to waiting, paused, failed and
completed."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Store, now_ms, validation_message
from plugins.pipelines.approval_queue import tool_wait_decided
from plugins.pipelines.definition import Pipeline, StepContext
from plugins.pipelines.metrics import PipelineMetrics
from plugins.pipelines.strict_json import NotJSON, strict_jsonable
from plugins.pipelines.tables import approvals, runs, step_journal, step_results
from plugins.pipelines.writer import RunWriter, Written

# The journal statuses of a step that ended: a resumed run replays it.
FINISHED_STEP = ("completed", "failed", "skipped")


async def journal_of(conn: AsyncConnection, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's step journal, by step path."""
    rows = await conn.execute(sa.select(step_journal).where(step_journal.c.run_id == run_id))
    return {
        r.path: {"status": r.status, "attempts": r.attempts, "output": r.output, "error": r.error}
        for r in rows
    }


class RunProgress:
    def __init__(self, store: Store, writer: RunWriter, metrics: PipelineMetrics) -> None:
        self.store = store
        self.writer = writer
        self.metrics = metrics

    def _journal_upsert(
        self,
        run_id: str,
        path: str,
        status: str,
        attempts: int,
        output: Any,
        error: str | None,
        started: int,
        finished: int | None = None,
    ) -> Any:
        return self.store.dialect.upsert(
            step_journal,
            ["run_id", "path"],
            {
                "run_id": run_id,
                "path": path,
                "status": status,
                "attempts": attempts,
                "output": output,
                "error": error,
                "started_ms": started,
                "finished_ms": finished,
            },
        )

    async def _leave(self, conn: AsyncConnection, run_id: str, **values: Any) -> None:
        """The run leaves this worker (it waits, pauses or ended): its row, unleased."""
        await self.writer.guarded_update(
            conn, run_id, lease_owner=None, lease_expires_ms=None, **values
        )

    async def attempt_started(self, ctx: StepContext, first: bool) -> None:
        """Count the attempt in the journal before it runs (so a re-run after a crash
        sees ``attempt`` grow) and, for the first attempt, publish ``step.started``."""
        path = ctx.step_path
        entry = ctx.journal.get(path) or {}
        attempts = int(entry.get("attempts") or 0) + 1
        ctx.attempt = attempts
        ctx.journal[path] = {"status": "running", "attempts": attempts}
        started = now_ms()

        async def write(conn: AsyncConnection) -> Written:
            await self.writer.guarded_update(conn, ctx.run_id)
            await conn.execute(
                self._journal_upsert(ctx.run_id, path, "running", attempts, None, None, started)
            )
            if not first:
                return []
            return [("step.started", {"step": path, "kind": ctx.step.kind, "attempt": attempts})]

        await self.writer.commit(ctx.run_id, write)

    async def decided(self, ctx: StepContext, path: str, value: Any) -> None:
        """Store a decision (a branch condition, a loop test) under ``path``."""
        ctx.journal[path] = {"status": "decided", "attempts": 0, "output": value}
        now = now_ms()

        async def write(conn: AsyncConnection) -> Written:
            await self.writer.guarded_update(conn, ctx.run_id)
            await conn.execute(
                self._journal_upsert(ctx.run_id, path, "decided", 0, value, None, now, now)
            )
            return []

        await self.writer.commit(ctx.run_id, write)

    async def _write_step(
        self,
        conn: AsyncConnection,
        ctx: StepContext,
        status: str,
        attempts: int,
        output: Any,
        error: str | None,
        started: int,
    ) -> None:
        """A finished step's result row and journal entry (``output`` is what the journal
        keeps; the result row keeps a completed step's only)."""
        path = ctx.step_path
        total = int((ctx.journal.get(path) or {}).get("attempts") or 0)
        finished = now_ms()
        await conn.execute(
            step_results.insert().values(
                run_id=ctx.run_id,
                step_id=path,
                status=status,
                attempts=attempts,
                output=output if status == "completed" else None,
                error=error,
                started_ms=started,
                finished_ms=finished,
            )
        )
        await conn.execute(
            self._journal_upsert(ctx.run_id, path, status, total, output, error, started, finished)
        )

    async def record(
        self,
        ctx: StepContext,
        status: str,
        output: Any,
        error: str | None,
        attempts: int,
        started: int,
        cursor: int | None = None,
    ) -> None:
        """Store a step's outcome (``completed``, ``failed`` and continued, ``skipped``)
        with its event; for a top-level step (``cursor``: the index of the next one) also
        the run's new cursor and results. A continued failure's ``output`` is its
        ``{"error": ...}``."""
        path = ctx.step_path
        total = int((ctx.journal.get(path) or {}).get("attempts") or 0)
        ctx.journal[path] = {"status": status, "attempts": total, "output": output, "error": error}
        moved: dict[str, Any] = {"stalled_claims": 0}
        if cursor is not None:
            moved.update(cursor=cursor, results=ctx.results, released_step=None)

        async def write(conn: AsyncConnection) -> Written:
            await self.writer.guarded_update(conn, ctx.run_id, **moved)
            await self._write_step(conn, ctx, status, attempts, output, error, started)
            data: dict[str, Any] = {"step": path, "attempts": attempts}
            if status == "completed":
                data["output"] = output
            if error is not None:
                data["error"] = error
                data["continued"] = ctx.step.continue_on_error
            event = {"completed": "step.completed", "failed": "step.failed"}.get(
                status, "step.skipped"
            )
            return [(event, data)]

        await self.writer.commit(ctx.run_id, write)

    async def suspend(self, run_id: str, pipeline: Pipeline, waiting_for: dict[str, Any]) -> None:
        """The run waits (``waiting_for``: an approval or an input) and leaves its worker."""
        now = now_ms()
        waiting_for = {**waiting_for, "since_ms": now}

        async def write(conn: AsyncConnection) -> Written:
            await self._leave(
                conn, run_id, status="waiting", waiting_for=waiting_for, stalled_claims=0
            )
            events: Written = []
            if waiting_for["type"] == "approval":
                timeout = waiting_for.get("timeout_seconds")
                await conn.execute(
                    self.store.dialect.upsert(
                        approvals,
                        ["run_id", "step_id"],
                        {
                            "run_id": run_id,
                            "step_id": waiting_for["step"],
                            "pipeline_id": pipeline.id,
                            "status": "pending",
                            "message": waiting_for.get("message", ""),
                            "requested_ms": now,
                            "expires_ms": now + int(timeout * 1000) if timeout else None,
                            "on_timeout": waiting_for.get("on_timeout", "fail"),
                            "resolved_ms": None,
                            "approver": None,
                            "reason": None,
                        },
                    )
                )
                events.append(("approval.requested", {"step": waiting_for["step"], **waiting_for}))
            events.append(("run.waiting", {"waiting_for": waiting_for}))
            if waiting_for["type"] == "tool_approval":
                # Decided before the run was parked: no decision will come to wake it.
                resumed = await tool_wait_decided(conn, run_id, waiting_for["approval_id"])
                events += [(t, {k: v for k, v in d.items() if k != "run_id"}) for t, d in resumed]
            return events

        await self.writer.commit(run_id, write)
        if waiting_for["type"] == "tool_approval":
            self.writer.worker.wake.set()
        timeout = waiting_for.get("timeout_seconds") if waiting_for["type"] == "approval" else None
        if timeout:
            self.writer.worker.due_at(expiry_ms=now + int(timeout * 1000))

    async def pause(self, run_id: str, step_id: str, breakpoint: str) -> None:
        """The run pauses before ``step_id`` (a step path) at ``breakpoint``."""

        async def write(conn: AsyncConnection) -> Written:
            await self._leave(conn, run_id, status="paused", paused_at=step_id, stalled_claims=0)
            return [
                ("run.paused", {"step": step_id, "reason": "breakpoint", "breakpoint": breakpoint})
            ]

        await self.writer.commit(run_id, write)

    async def fail(
        self,
        run_id: str,
        error: dict[str, Any],
        extra: Written,
        step_row: tuple[StepContext, int, int, str] | None = None,
    ) -> None:
        """The run fails with ``error``, after the events ``extra``; ``step_row`` (the
        step, its attempts, start and message) stores the failed step's outcome too."""
        pipeline_id = ""

        async def write(conn: AsyncConnection) -> Written:
            nonlocal pipeline_id
            await self._leave(conn, run_id, status="failed", error=error, finished_ms=now_ms())
            pipeline_id = str(
                (
                    await conn.execute(sa.select(runs.c.pipeline_id).where(runs.c.id == run_id))
                ).scalar_one()
            )
            if step_row is not None:
                ctx, attempts, started, message = step_row
                await self._write_step(conn, ctx, "failed", attempts, None, message, started)
            return [*extra, ("run.failed", {"error": error})]

        await self.writer.commit(run_id, write)
        self.metrics.finished.labels(pipeline_id, "failed").inc()

    async def complete(self, run_id: str, pipeline: Pipeline, output: Any) -> None:
        """The run completes with ``output``, or fails when the output does not match the
        pipeline's output model or is not JSON."""
        if pipeline.output_model is not None:
            try:
                output = pipeline.output_model.model_validate(output)
            except ValidationError as exc:
                message, _ = validation_message(exc, "output.")
                await self.fail(
                    run_id, {"message": f"output does not match the schema: {message}"}, []
                )
                return
        try:
            output = strict_jsonable(output)
        except NotJSON as exc:
            await self.fail(run_id, {"message": f"run output is not JSON: {exc}"}, [])
            return

        async def write(conn: AsyncConnection) -> Written:
            await self._leave(
                conn,
                run_id,
                status="completed",
                output=output,
                finished_ms=now_ms(),
                waiting_for=None,
            )
            return [("run.completed", {"output": output})]

        await self.writer.commit(run_id, write)
        self.metrics.finished.labels(pipeline.id, "completed").inc()
