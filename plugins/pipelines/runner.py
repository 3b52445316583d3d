"""Running a claimed run: its top-level steps from its ``cursor`` on, each by its kind, with
retries, breakpoints, ``when`` predicates and nested steps, until it completes, fails,
waits or pauses. A step the journal holds as finished is replayed, not run again, so a
step that was in progress when its process died runs again (at least once) and a finished
one never. The runner is what a :class:`StepContext` reaches as ``ctx.engine``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from host.api import Event, GatewayContext, now_ms
from plugins.pipelines import breakpoints, execution
from plugins.pipelines.config import PipelinesConfig
from plugins.pipelines.definition import Pipeline, Step, StepContext, StepError
from plugins.pipelines.kinds import Suspend
from plugins.pipelines.metrics import PipelineMetrics
from plugins.pipelines.progress import FINISHED_STEP, RunProgress, journal_of
from plugins.pipelines.run_definitions import DefinitionChanged, RunDefinitions
from plugins.pipelines.runs import jsonable
from plugins.pipelines.strict_json import step_output
from plugins.pipelines.tables import runs
from plugins.pipelines.writer import LostRun, RunWriter

log = logging.getLogger("gateway.pipelines")


class _StepFailed(Exception):
    def __init__(self, message: str, attempts: int, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        self.path = path  # the nested step that failed, if it was one


_SKIPPED = object()


class RunRunner:
    def __init__(
        self,
        gateway: GatewayContext,
        config: PipelinesConfig,
        writer: RunWriter,
        definitions: RunDefinitions,
        metrics: PipelineMetrics,
    ) -> None:
        self.gateway = gateway
        self.store = gateway.store
        self.writer = writer
        self.definitions = definitions
        self.metrics = metrics
        self.progress = RunProgress(gateway.store, writer, metrics)
        self.execution = execution.StepExecution(config, gateway.metrics.registry)

    async def publish(self, run_id: str, type_: str, data: dict[str, Any]) -> Event:
        return await self.writer.publish(run_id, type_, data)

    async def execute(self, run_id: str) -> None:
        """The task of a claimed run (``asyncio.Task`` in ``WorkerState.tasks``)."""
        try:
            await self._advance(run_id)
        except LostRun:
            pass
        except BaseException as exc:  # user code's SystemExit must not end us
            if isinstance(exc, asyncio.CancelledError) and execution.engine_cancel(exc):
                return
            log.exception("run %s crashed in the engine", run_id)
            with contextlib.suppress(Exception):
                await self.progress.fail(run_id, {"message": "internal engine error"}, [])
        finally:
            self.writer.worker.tasks.pop(run_id, None)
            self.writer.worker.wake.set()

    def _observe(self, pipeline: Pipeline, step: Step, outcome: str, started: int) -> None:
        seconds = (now_ms() - started) / 1000
        self.metrics.step_seconds.labels(pipeline.id, step.kind, outcome).observe(seconds)

    async def _advance(self, run_id: str) -> None:
        async with self.store.read() as conn:
            row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
            if row is None:
                return
            journal = await journal_of(conn, run_id)
            changed = ""
            try:
                pipeline = await self.definitions.for_run(conn, row)
            except DefinitionChanged as exc:
                pipeline, changed = None, str(exc)
        if pipeline is None:
            await self.progress.fail(run_id, {"code": "definition_changed", "message": changed}, [])
            return
        results: dict[str, Any] = dict(row.results or {})
        resolutions: dict[str, Any] = dict(row.resolutions or {})
        released = row.released_step
        cursor = int(row.cursor)
        steps = list(pipeline.steps)
        while cursor < len(steps):
            step = steps[cursor]
            # A step that already started (it waits, or its process died) is not re-tested.
            if released != step.id and step.id not in journal:
                hit = await breakpoints.hit(self.store, pipeline.id, step.id, step.id)
                if hit is not None:
                    await self.progress.pause(run_id, step.id, hit)
                    return
            ctx = StepContext(
                self,
                run_id,
                pipeline,
                dict(row.input),
                results,
                step,
                resolutions.get(step.id),
                path=step.id,
                resolutions=resolutions,
                journal=journal,
                released=released,
                owner=row.owner,
            )
            started = now_ms()
            # A step that already started (it waits, or its process died) is not re-tested.
            if (
                step.when is not None
                and step.id not in journal
                and not execution.call_user(step.when, ctx)
            ):
                await self.progress.record(ctx, "skipped", None, None, 0, started, cursor + 1)
                cursor += 1
                continue
            try:
                output, attempts = await self.run_step(ctx)
            except Suspend as suspend:
                if suspend.waiting_for.get("type") == "breakpoint":  # at a nested step
                    waiting = suspend.waiting_for
                    await self.progress.pause(run_id, waiting["step"], waiting["breakpoint"])
                else:
                    await self.progress.suspend(run_id, pipeline, suspend.waiting_for)
                return
            except _StepFailed as failure:
                self._observe(pipeline, step, "failed", started)
                if step.continue_on_error:
                    results[step.id] = {"error": failure.message}
                    await self.progress.record(
                        ctx,
                        "failed",
                        results[step.id],
                        failure.message,
                        failure.attempts,
                        started,
                        cursor + 1,
                    )
                    cursor += 1
                    released = None
                    continue
                error = {"message": failure.message, "step": step.id}
                if failure.path is not None:
                    error["path"] = failure.path
                await self.progress.fail(
                    run_id,
                    error,
                    [("step.failed", {"step": step.id, "error": failure.message})],
                    step_row=(ctx, failure.attempts, started, failure.message),
                )
                return
            self._observe(pipeline, step, "completed", started)
            results[step.id] = output
            await self.progress.record(
                ctx, "completed", output, None, attempts, started, cursor + 1
            )
            cursor += 1
            released = None
        await self._complete(run_id, pipeline, dict(row.input), results)

    async def run_step(self, ctx: StepContext) -> tuple[Any, int]:
        step = ctx.step
        kind = self.gateway.registry("step_kinds").get(step.kind)
        path = ctx.step_path
        if kind is None:
            await self.publish(ctx.run_id, "step.started", {"step": path, "kind": step.kind})
            raise _StepFailed(f"unknown step kind {step.kind!r}", 1)
        for attempt in range(step.retries + 1):
            await self.progress.attempt_started(ctx, first=attempt == 0)
            try:
                output = await execution.attempt(kind, step, ctx)
                return step_output(output), attempt + 1
            except (Suspend, LostRun, _StepFailed):
                raise
            except StepError as exc:
                raise _StepFailed(str(exc), attempt + 1) from None
            except BaseException as exc:  # a step's SystemExit is its failure
                if execution.engine_cancel(exc):
                    raise
                message = execution.failure_message(exc)
                if attempt >= step.retries:
                    raise _StepFailed(message, attempt + 1) from None
                delay = step.backoff_seconds * (2**attempt)
                await self.publish(
                    ctx.run_id,
                    "step.retry",
                    {
                        "step": path,
                        "attempt": attempt + 1,
                        "error": message,
                        "delay_seconds": delay,
                    },
                )
                await asyncio.sleep(delay)
        raise _StepFailed("no attempt made", 0)  # pragma: no cover - loop always returns

    async def decide(self, ctx: StepContext, path: str, compute: Callable[[], Any]) -> Any:
        entry = ctx.journal.get(path)
        if entry is not None and entry.get("status") == "decided":
            return entry.get("output")
        value = jsonable(compute())
        await self.progress.decided(ctx, path, value)
        return value

    async def run_nested(
        self, parent: StepContext, steps: list[Step], scope: str = ""
    ) -> dict[str, Any]:
        """Run nested steps in order. A step the journal holds as finished is replayed
        from it (its stored output; a stored failure fails again), not run again; an
        approval or wait step suspends the whole run (``Suspend`` goes up to the run)."""
        outputs: dict[str, Any] = {}
        base = f"{parent.step_path}{scope}"
        for step in steps:
            path = f"{base}.{step.id}"
            entry = parent.journal.get(path)
            if entry is not None and entry.get("status") in FINISHED_STEP:
                if entry["status"] == "skipped":
                    continue
                if entry["status"] == "failed" and not step.continue_on_error:
                    raise _StepFailed(str(entry.get("error")), int(entry["attempts"]), path)
                output = entry.get("output")
            else:
                await self._nested_breakpoint(parent, step, path)
                output = await self._run_nested_step(parent, step, path)
                if output is _SKIPPED:
                    continue
            parent.results[step.id] = output
            outputs[step.id] = output
        return outputs

    async def _nested_breakpoint(self, parent: StepContext, step: Step, path: str) -> None:
        """Pause the run before a nested step that has not started yet when a breakpoint
        names its id or its path: a ``Suspend`` that goes up like an approval's (so in a
        ``parallel`` step the other branches go on to their end or their own stop first),
        and which the run turns into ``paused``."""
        if path in parent.journal or parent.released == path:
            return
        hit = await breakpoints.hit(self.store, parent.pipeline.id, step.id, path)
        if hit is not None:
            raise Suspend({"type": "breakpoint", "step": path, "breakpoint": hit})

    async def _run_nested_step(self, parent: StepContext, step: Step, path: str) -> Any:
        ctx = StepContext(
            self,
            parent.run_id,
            parent.pipeline,
            parent.input,
            parent.results,
            step,
            parent.resolutions.get(path),
            parent.iteration,
            True,
            path=path,
            resolutions=parent.resolutions,
            journal=parent.journal,
            released=parent.released,
            owner=parent.owner,
        )
        started = now_ms()
        if (
            step.when is not None
            and path not in parent.journal
            and not execution.call_user(step.when, ctx)
        ):
            await self.progress.record(ctx, "skipped", None, None, 0, started)
            return _SKIPPED
        try:
            output, attempts = await self.run_step(ctx)
        except _StepFailed as failure:
            self._observe(parent.pipeline, step, "failed", started)
            if not step.continue_on_error:
                if failure.path is None:  # a failure of this step, not of one inside it
                    failure.path = path
                    await self.progress.record(
                        ctx, "failed", None, failure.message, failure.attempts, started
                    )
                raise
            output = {"error": failure.message}
            await self.progress.record(
                ctx, "failed", output, failure.message, failure.attempts, started
            )
            return output
        self._observe(parent.pipeline, step, "completed", started)
        await self.progress.record(ctx, "completed", output, None, attempts, started)
        return output

    async def _complete(
        self, run_id: str, pipeline: Pipeline, run_input: dict[str, Any], results: dict[str, Any]
    ) -> None:
        last = pipeline.steps[-1].id
        ctx = StepContext(self, run_id, pipeline, run_input, results, pipeline.steps[-1])
        output = pipeline.output(ctx) if pipeline.output is not None else results.get(last)
        await self.progress.complete(run_id, pipeline, output)
