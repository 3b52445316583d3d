"""Step processes: ``code`` steps with ``isolation = "process"`` run in a pool of
processes the gateway starts (``multiprocessing``, ``spawn`` context), so a step that
hangs or runs away can be stopped for real: its process is killed (SIGKILL) on timeout
and on cancel, and a fresh one is started in its place. A step process runs one step at
a time; it exits with the gateway (it watches its parent).

A step process cannot be sent the function object (directory pipeline modules are run
from their source under generated names, which no other process can import), so it is
sent where to find it: a module of the pipelines directory (or a run's stored source) is
executed in the child from the same source under the same name, any other module is
imported; the function is then looked up by its qualified name (hence a top-level
function, checked when the definition loads). Each step process runs a module's top level
once, the first time it needs a function of it.

The function gets a :class:`ProcessStepContext` (the step's data: input, results, ids,
attempt), not the engine's context: no ``ctx.gateway``, no ``ctx.delta``. Its return value
is converted to JSON in the child (as the engine does); an exception it raises, any
``BaseException`` included, fails the attempt (``StepError`` without retries), and a child
that dies mid-step (``os._exit``, a crash) fails it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import multiprocessing
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel

from plugins.pipelines import deadlines
from plugins.pipelines.catalog import SOURCE_ATTRIBUTE, describe_exception, exec_module
from plugins.pipelines.definition import StepContext, StepError

# How long a new step process may take to start (import the gateway's modules) before
# the step that waits for it fails; not counted in the step's timeout.
START_SECONDS = 120.0


class StepProcessError(Exception):
    """The step failed in its step process (its message says how, as the child saw it),
    or the process died or could not start."""


@dataclass
class StepRef:
    id: str
    kind: str = "code"


@dataclass
class ProcessStepContext:
    """What a process-isolated step function sees: the data of the engine's
    ``StepContext`` under the same names."""

    run_id: str
    pipeline_id: str
    step: StepRef
    step_path: str
    step_key: str
    attempt: int
    iteration: int
    input: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"ctx.{name} is not available to a step with isolation 'process' (it sees "
            "input, results, run_id, pipeline_id, step, step_path, step_key, attempt, "
            "iteration)"
        )


# (loader, qualified name, context): loader is ("import", module) or
# ("exec", module, source, file, filename) for a module run from its source.
Call = tuple[tuple[Any, ...], str, ProcessStepContext]


def process_call(fn: Any, ctx: StepContext) -> Call:
    """What a step process needs to call ``fn(ctx)``."""
    module_name = fn.__module__
    source = getattr(sys.modules.get(module_name), SOURCE_ATTRIBUTE, None)
    loader = ("exec", module_name, *source) if source else ("import", module_name)
    data = ProcessStepContext(
        run_id=ctx.run_id,
        pipeline_id=ctx.pipeline.id,
        step=StepRef(ctx.step.id, ctx.step.kind),
        step_path=ctx.step_path,
        step_key=ctx.step_key,
        attempt=ctx.attempt,
        iteration=ctx.iteration,
        input=ctx.input,
        results=dict(ctx.results),
    )
    return loader, fn.__qualname__, data


# -- the parent's side ---------------------------------------------------------------------


class _Died(Exception):
    def __init__(self, exitcode: int | None) -> None:
        super().__init__(exitcode)
        self.exitcode = exitcode

    def describe(self) -> str:
        code = self.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


class _Child:
    """One step process and the parent's end of its pipe. Replies are read when the pipe
    is readable (``add_reader``): nothing blocks the event loop while a step runs."""

    def __init__(self, mp: Any) -> None:
        self.loop = asyncio.get_running_loop()
        self.conn, child_conn = mp.Pipe()
        self.process = mp.Process(
            target=serve, args=(child_conn,), name="gateway-step-process", daemon=True
        )
        self.process.start()
        child_conn.close()
        self.alive = True
        self.exitcode: int | None = None
        self.exited: asyncio.Future[int | None] = self.loop.create_future()
        self._waiter: asyncio.Future[Any] | None = None
        self.loop.add_reader(self.conn.fileno(), self._readable)

    async def ask(self, message: Any = None) -> Any:
        """Send ``message`` (None: send nothing) and wait for the child's next message."""
        if not self.alive:
            raise _Died(self.exitcode)
        self._waiter = self.loop.create_future()
        try:
            if message is not None:
                try:
                    self.conn.send(message)
                except OSError:  # it died meanwhile; its end is reported by _readable
                    pass
            return await self._waiter
        finally:
            self._waiter = None

    def kill(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError, ValueError):
                self.process.kill()
            self._ended()

    def _readable(self) -> None:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self._ended()
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(message)

    def _ended(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.loop.remove_reader(self.conn.fileno())
        self.conn.close()
        self.loop.add_reader(self.process.sentinel, self._reaped)

    def _reaped(self) -> None:
        self.loop.remove_reader(self.process.sentinel)
        # The sentinel is readable once the child closed its files, which can be just
        # before it can be waited for: try again shortly rather than leave a zombie.
        self.process.join(0)
        if self.process.exitcode is None:
            self.loop.call_later(0.02, self._reaped)
            return
        code = self.exitcode = self.process.exitcode
        self.process.close()
        if not self.exited.done():
            self.exited.set_result(code)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(_Died(code))


class StepProcesses:
    """At most ``size`` step processes run steps at a time; they are started when first
    needed and kept. One killed (timeout, cancel) or dead is replaced at once in the
    background, so the next process-isolated step does not wait for a start."""

    def __init__(self, size: int, killed: Counter) -> None:
        self.size = size
        self.killed = killed
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Child] = []
        self._spares: list[asyncio.Task[_Child]] = []
        self._children: set[_Child] = set()
        self._closed = False
        self._mp = multiprocessing.get_context("spawn")

    async def call(self, call: Call) -> Any:
        with deadlines.clock_stopped():
            await self._slots.acquire()
            try:
                child = await self._take()
            except BaseException:
                self._slots.release()
                raise
        try:
            reply = await child.ask(call)
        except _Died as died:
            self.killed.labels("died").inc()
            self._replace(child)
            raise StepProcessError(
                f"the step process ended while running the step ({died.describe()})"
            ) from None
        except BaseException:
            # A timeout or a cancel: the hard stop this isolation is for.
            self.killed.labels("timeout" if deadlines.stopped_by_timeout() else "cancel").inc()
            child.kill()
            self._replace(child)
            raise
        else:
            self._idle.append(child)
        finally:
            self._slots.release()
        kind, payload = reply
        if kind == "ok":
            return json.loads(payload)
        if kind == "step_error":
            raise StepError(payload)
        raise StepProcessError(payload)

    async def _take(self) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.alive:
                return child
            self._children.discard(child)
        if self._spares:
            return await self._spares.pop()
        return await self._start()

    async def _start(self) -> _Child:
        if self._closed:
            raise StepProcessError("the gateway is stopping")
        child = _Child(self._mp)
        self._children.add(child)
        try:
            async with asyncio.timeout(START_SECONDS):
                ready = await child.ask()
        except BaseException as exc:
            child.kill()
            self._children.discard(child)
            if isinstance(exc, _Died):
                raise StepProcessError(
                    f"a step process failed to start ({exc.describe()})"
                ) from None
            if isinstance(exc, TimeoutError):
                raise StepProcessError(
                    f"a step process did not start within {START_SECONDS:g} s"
                ) from None
            raise
        if ready != ("ready", child.process.pid):
            child.kill()
            self._children.discard(child)
            raise StepProcessError(f"a step process started badly: {ready!r}")
        return child

    def _replace(self, child: _Child) -> None:
        self._children.discard(child)
        if self._closed or self._idle or self._spares:
            return
        spare = asyncio.ensure_future(self._start())
        spare.add_done_callback(_ignore_failure)
        self._spares.append(spare)

    async def close(self) -> None:
        """Kill every step process (busy ones were killed as their steps were cancelled)."""
        self._closed = True
        for spare in self._spares:
            spare.cancel()
        await asyncio.gather(*self._spares, return_exceptions=True)
        self._spares.clear()
        children = list(self._children)
        for child in children:
            child.kill()
        self._idle.clear()
        self._children.clear()
        if children:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*(c.exited for c in children))


def _ignore_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a spare that failed to start: the next step starts its own


# -- the child's side ----------------------------------------------------------------------


def serve(conn: Connection) -> None:
    """A step process: run calls until the pipe closes; exit with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the gateway's to handle
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            loader, qualname, ctx = conn.recv()
        except EOFError:
            return
        conn.send(_run(loader, qualname, ctx))


def _exit_with(parent: Any) -> None:
    parent.join()
    os._exit(1)


def _run(loader: tuple[Any, ...], qualname: str, ctx: ProcessStepContext) -> tuple[str, str]:
    try:
        fn = _function(loader, qualname)
        value = fn(ctx)
        if inspect.isawaitable(value):
            value = asyncio.run(_awaited(value))
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return "ok", json.dumps(value, default=str)
    except StepError as exc:
        return "step_error", str(exc)
    except BaseException as exc:  # SystemExit too: the step's failure
        return "error", describe_exception(exc)


async def _awaited(value: Any) -> Any:
    return await value


def _function(loader: tuple[Any, ...], qualname: str) -> Any:
    kind, module_name = loader[0], loader[1]
    module = sys.modules.get(module_name)
    if module is None:
        if kind == "exec":
            source, file, filename = loader[2:]
            module = exec_module(module_name, source, file, filename)
        else:
            module = importlib.import_module(module_name)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    return target
