"""Hook calls that pluggy makes and the host can attribute to plugins.

pluggy calls every implementation with the same arguments and returns their non-``None``
results, so by itself it cannot say which plugin registered a name, which plugin's
coroutine this is, or which plugin failed. The host therefore registers each plugin's
implementations wrapped in :func:`attributed`: while an implementation runs (its
synchronous part, and later the awaiting of what it returned) :func:`running_plugin`
names its plugin, and a call made through :func:`record` gets one :class:`Outcome` per
implementation, ``None`` results and (when asked to isolate) failures included. pluggy
still orders the implementations, runs the wrappers around them and matches arguments.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    """What one plugin's implementation answered (``result``), or how it failed."""

    plugin: str
    result: Any = None
    error: Exception | None = None


@dataclass
class _Recording:
    isolate: bool
    outcomes: list[Outcome] = field(default_factory=list)


_RUNNING: ContextVar[str | None] = ContextVar("gateway_running_plugin", default=None)
_RECORDING: ContextVar[_Recording | None] = ContextVar("gateway_hook_recording", default=None)


def running_plugin() -> str | None:
    """The plugin whose hook implementation is running now, or None outside of one."""
    return _RUNNING.get()


@contextmanager
def running(plugin: str) -> Iterator[None]:
    token = _RUNNING.set(plugin)
    try:
        yield
    finally:
        _RUNNING.reset(token)


def attributed(plugin: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as pluggy should call it for ``plugin``. ``functools.wraps`` keeps the hookimpl
    marker and lets pluggy read the original's argument names."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        recording = _RECORDING.get()
        running_token = _RUNNING.set(plugin)
        # A hook this implementation calls in turn records for itself, not into ours.
        nested_token = _RECORDING.set(None)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if recording is None or not recording.isolate:
                note_plugin(exc, plugin, hook)
                raise
            recording.outcomes.append(Outcome(plugin, error=exc))
            return None
        finally:
            _RECORDING.reset(nested_token)
            _RUNNING.reset(running_token)
        if recording is not None:
            recording.outcomes.append(Outcome(plugin, result))
        return result

    return call


def record(call: Callable[[], Any], *, isolate: bool) -> list[Outcome]:
    """Run ``call`` (one pluggy hook call) and return each implementation's outcome in the
    order pluggy called them. With ``isolate`` an implementation that raises becomes an
    Outcome with ``error`` and the next one still runs; otherwise the exception
    propagates (through pluggy's wrappers) and coroutines already returned are closed."""
    recording = _Recording(isolate)
    token = _RECORDING.set(recording)
    try:
        call()
    except BaseException:
        close(recording.outcomes)
        raise
    finally:
        _RECORDING.reset(token)
    return recording.outcomes


async def settle(outcome: Outcome, hook: str, *, isolate: bool) -> None:
    """Await ``outcome.result`` if it is awaitable, as its plugin (``running_plugin()``
    names it meanwhile); a failure becomes ``outcome.error`` with ``isolate``."""
    if outcome.error is not None or not inspect.isawaitable(outcome.result):
        return
    with running(outcome.plugin):
        try:
            outcome.result = await outcome.result
        except Exception as exc:
            if not isolate:
                note_plugin(exc, outcome.plugin, hook)
                raise
            outcome.result, outcome.error = None, exc


def close(outcomes: Sequence[Outcome]) -> None:
    """Close coroutines that will not be awaited (no "never awaited" warning)."""
    for outcome in outcomes:
        if inspect.iscoroutine(outcome.result):
            outcome.result.close()


def note_plugin(exc: BaseException, plugin: str, hook: str) -> None:
    """Say in the traceback which plugin failed (once, at the innermost hook)."""
    note = f"raised by plugin {plugin!r} in {hook}"
    if not any(n.startswith("raised by plugin ") for n in getattr(exc, "__notes__", ())):
        exc.add_note(note)
