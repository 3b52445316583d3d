"""How a step attempt runs, and how user code is kept from ending the gateway.

An attempt runs under its step's ``timeout_seconds`` (``attempt``). A ``code`` step's
function runs by its isolation (``Step.isolation``, else its pipeline's):

- ``thread`` (default): an async function on the event loop; a sync one in a worker
  thread of :class:`StepThreads`, so it never blocks the loop (requests, heartbeats,
  other runs). On timeout or cancel the attempt ends at once, but a thread cannot be
  stopped: it runs to its end in the background and its result is discarded
  (``gateway_pipeline_step_threads_abandoned``);
- ``process``: in a step process (``isolation.py``), killed on timeout and on cancel;
- ``loop``: a sync function called on the event loop itself (no thread hop): it blocks
  everything while it runs and its timeout cannot interrupt it. Only for steps that
  return in microseconds.

Step functions, predicates and pipeline modules are user code: whatever they raise
(``SystemExit``, ``KeyboardInterrupt`` included) is a failure of that step or file, never
the end of the process. Only a ``CancelledError`` while the engine cancels the task (run
cancelled, lease lost, shutdown) goes through as a cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from plugins.pipelines import deadlines
from plugins.pipelines.catalog import describe_exception as describe
from plugins.pipelines.config import PipelinesConfig
from plugins.pipelines.definition import Step, StepContext
from plugins.pipelines.isolation import StepProcessError, StepProcesses, process_call


class StepTimedOut(TimeoutError):
    """The attempt ran past its step's ``timeout_seconds`` (a ``TimeoutError`` the step
    raised itself is an ordinary failure)."""


async def attempt(kind: Any, step: Step, ctx: StepContext) -> Any:
    """One attempt of ``step`` by its kind; :class:`StepTimedOut` after the step's
    ``timeout_seconds`` (time spent waiting for a free worker thread or step process is
    not counted)."""
    try:
        async with asyncio.timeout(step.timeout_seconds) as scope:
            token = deadlines.current.set(scope if step.timeout_seconds is not None else None)
            try:
                return await kind.run(step, ctx)
            finally:
                deadlines.current.reset(token)
    except TimeoutError:
        if scope.expired():
            raise StepTimedOut(f"step timed out after {step.timeout_seconds} s") from None
        raise


def failure_message(exc: BaseException) -> str:
    """What a failed attempt's ``step.retry``/``step.failed`` event and the run error say."""
    if isinstance(exc, StepTimedOut | StepProcessError | UserCodeExit):
        return str(exc)
    return describe(exc)


def engine_cancel(exc: BaseException) -> bool:
    """Whether ``exc`` is a cancellation the engine asked for (of the current task), as
    opposed to a ``CancelledError`` a step raised or let out of a task of its own."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class UserCodeExit(Exception):
    """A ``SystemExit``, ``KeyboardInterrupt`` or other non-``Exception`` raised by user
    code outside a step attempt (a ``when`` predicate), as an ordinary exception."""


def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` where whatever it raises must stay an ``Exception``: outside a step
    attempt (in a task of a ``parallel`` step) asyncio would let a ``SystemExit`` end the
    event loop."""
    try:
        return fn(*args)
    except Exception:
        raise
    except BaseException as exc:
        raise UserCodeExit(describe(exc)) from exc


def is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


class StepExecution:
    """The engine's step runners: worker threads and step processes, with their
    metrics. Sized from ``max_concurrent_runs``: ``2 * max_concurrent_runs`` (at least 4)
    sync steps run at a time, in as many threads (a ``parallel`` step runs several);
    ``max_concurrent_runs`` (at least 1) step processes, started when first needed."""

    def __init__(self, config: PipelinesConfig, registry: CollectorRegistry) -> None:
        self.abandoned_total = Counter(
            "gateway_pipeline_step_threads_abandoned",
            "Sync steps whose attempt ended (timeout, cancel) while their thread still ran",
            registry=registry,
        )
        self.abandoned_running = Gauge(
            "gateway_pipeline_step_threads_abandoned_running",
            "Threads of abandoned sync steps that are still running",
            registry=registry,
        )
        killed = Counter(
            "gateway_pipeline_step_processes_killed",
            "Step processes killed, by reason (timeout or cancel, died)",
            ["reason"],
            registry=registry,
        )
        self.threads = StepThreads(max(4, 2 * config.max_concurrent_runs), self)
        self.processes = StepProcesses(max(1, config.max_concurrent_runs), killed)

    async def call(self, fn: Callable[..., Any], step: Step, ctx: StepContext) -> Any:
        """Call a code step's function by its isolation; an awaitable it returns is awaited
        on the event loop."""
        isolation = step.isolation or ctx.pipeline.isolation
        if isolation == "process":
            return await self.processes.call(process_call(fn, ctx))
        if isolation == "loop" or is_async(fn):
            value = fn(ctx)
        else:
            value = await self.threads.call(fn, ctx)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def close(self) -> None:
        self.threads.close()
        await self.processes.close()


class _Job:
    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        pool: StepThreads,
    ) -> None:
        self.fn, self.args, self.loop, self.pool = fn, args, loop, pool
        self.context = contextvars.copy_context()
        self.future: asyncio.Future[Any] = loop.create_future()
        self.finished = False  # the function returned (set on the event loop)
        self.abandoned = False

    def run(self) -> None:  # in the worker thread
        try:
            outcome: tuple[bool, Any] = (True, self.context.run(self.fn, *self.args))
        except BaseException as exc:  # a step's own SystemExit too: its failure
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the gateway stopped
            self.loop.call_soon_threadsafe(self.settle, outcome)

    def settle(self, outcome: tuple[bool, Any]) -> None:  # on the event loop
        self.finished = True
        if self.abandoned:
            self.pool.metrics.abandoned_running.dec()
        if self.future.done():
            return
        ok, value = outcome
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


class StepThreads:
    """Runs sync step functions in daemon worker threads, at most ``size`` at a time.
    A thread whose attempt ended (timeout, cancel) is abandoned: it no longer counts
    toward ``size`` and runs on; once its function returns it rejoins the idle threads.
    Daemon threads, unlike ``concurrent.futures``' (joined at exit), never keep a stopping
    gateway alive."""

    def __init__(self, size: int, metrics: StepExecution) -> None:
        self.size = size
        self.metrics = metrics
        self._slots = asyncio.Semaphore(size)
        self._idle: list[queue.SimpleQueue[_Job | None]] = []
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self._closed = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._slots.locked():
            with deadlines.clock_stopped():
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            job = _Job(fn, args, asyncio.get_running_loop(), self)
            self._inbox().put(job)
            try:
                return await job.future
            except asyncio.CancelledError:
                if not job.finished:
                    job.abandoned = True
                    self.metrics.abandoned_total.inc()
                    self.metrics.abandoned_running.inc()
                raise
        finally:
            self._slots.release()

    def _inbox(self) -> queue.SimpleQueue[_Job | None]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        name = f"pipelines-step-{next(self._names)}"
        threading.Thread(target=self._work, args=(inbox,), name=name, daemon=True).start()
        return inbox

    def _work(self, inbox: queue.SimpleQueue[_Job | None]) -> None:
        while True:
            job = inbox.get()
            if job is None:
                return
            job.run()
            del job
            with self._lock:
                if self._closed or len(self._idle) >= self.size:
                    return
                self._idle.append(inbox)

    def close(self) -> None:
        """End the idle threads; busy ones (abandoned steps) end when their function returns."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)
