"""The current step attempt's timeout, as the worker pools see it: they stop its clock
while the attempt waits for a free worker thread or step process, and tell a timeout
from a cancel when they stop a step."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator

# The running attempt's timeout scope (None when its step has no timeout). Set per task,
# so each branch of a ``parallel`` step sees its own.
current: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "pipelines_attempt_timeout", default=None
)


@contextlib.contextmanager
def clock_stopped() -> Iterator[None]:
    """Suspend the current attempt's timeout while waiting for a worker; it resumes with
    the time it had left."""
    scope = current.get()
    when = scope.when() if scope is not None and not scope.expired() else None
    if scope is None or when is None:
        yield
        return
    loop = asyncio.get_running_loop()
    left = when - loop.time()
    scope.reschedule(None)
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):  # the scope ended meanwhile
            scope.reschedule(loop.time() + left)


def stopped_by_timeout() -> bool:
    """Whether the current attempt's timeout has fired (its ``CancelledError`` is on the
    way), as opposed to a cancel of the run."""
    scope = current.get()
    return scope is not None and scope.expired()
