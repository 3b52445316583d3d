"""The pipelines plugin's public API for other plugins: look up a pipeline, start a run,
follow its events and await its end.

Other plugins reach it as the service ``host.api.service(PipelinesAPI)`` (importing the
type from ``plugins.pipelines.contract``), which exists only while the pipelines plugin
is loaded and started. Runs started here are ordinary runs: stored, owned by
the principal that started them, listed by ``GET /runs``, refused while the gateway is
paused, paused by breakpoints, and they need the caller to hold the ``allow_pipeline_run``
gate.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from quart import Quart

from host.api import Event, GatewayError, Principal, context, owner_key
from plugins.pipelines.catalog import PipelineCatalog
from plugins.pipelines.definition import Pipeline
from plugins.pipelines.engine import TERMINAL, TERMINAL_EVENTS, engine_of, run_row, stream_of
from plugins.pipelines.idempotency import MAX_KEY, api_keys, fingerprint
from plugins.pipelines.routes import CATALOG_KEY, GATE_RUN

# Events after which a run needs nothing more from its caller: it ended, or it waits for a
# person (an approval, an input) or for a debugger (a breakpoint).
STOP_EVENTS = frozenset({*TERMINAL_EVENTS, "run.waiting", "run.paused"})

__all__ = ["GATE_RUN", "STOP_EVENTS", "PipelinesAPI", "RunState"]


@dataclass(frozen=True)
class RunState:
    """Where a run stands: ``status`` is one of pending, running, waiting, paused,
    completed, failed, cancelled."""

    run_id: str
    pipeline_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    waiting_for: dict[str, Any] | None = None
    paused_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class PipelinesAPI:
    def __init__(self, app: Quart) -> None:
        self.app = app

    def _catalog(self) -> PipelineCatalog:
        found: PipelineCatalog | None = context(self.app).extras.get(CATALOG_KEY)
        if found is None:
            raise GatewayError(503, "pipelines_not_ready", "the pipelines plugin has not started")
        return found

    def pipeline(self, pipeline_id: str) -> Pipeline | None:
        """The current definition of ``pipeline_id``, or None."""
        return self._catalog().get(pipeline_id)

    def pipeline_ids(self) -> list[str]:
        return sorted(self._catalog().current)

    async def start_run(
        self,
        pipeline_id: str,
        raw_input: Any,
        *,
        principal: Principal,
        trigger: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> str:
        """Start a run as ``principal``; returns its id. 403 ``policy_gate_denied``
        without the run gate, 404 ``pipeline_not_found``, 503 ``gateway_paused`` while
        paused, 422 ``validation_failed`` (``details.param`` names the field) when the
        input fails the pipeline's schema, 400 ``invalid_idempotency_key`` unless 1 to 200
        characters, 422 ``idempotency_key_reused`` when ``principal`` used the key before
        with another input. Nothing is stored on any of these. ``idempotency_key`` is
        scoped to ``principal`` (another principal's same key starts its own run); the
        same key with the same input returns the first run."""
        context(self.app).auth.require_gate(principal, GATE_RUN, "running a pipeline")
        pipeline = self.pipeline(pipeline_id)
        if pipeline is None:
            raise GatewayError(404, "pipeline_not_found", f"no pipeline {pipeline_id!r}")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_KEY:
            raise GatewayError(
                400, "invalid_idempotency_key", f"an idempotency key is 1 to {MAX_KEY} characters"
            )
        stored, older = api_keys(principal, idempotency_key)
        run_id, _created = await engine_of(self.app).start_run(
            pipeline,
            raw_input,
            trigger=trigger,
            created_by=principal.name,
            owner=owner_key(principal),
            idempotency_key=stored,
            also_matches=older,
            fingerprint=fingerprint(pipeline_id, raw_input) if stored else None,
        )
        return run_id

    async def state(self, run_id: str) -> RunState:
        """The run as stored; 404 ``run_not_found``."""
        async with context(self.app).store.read() as conn:
            row = await run_row(conn, run_id)
        return RunState(
            run_id=row.id,
            pipeline_id=row.pipeline_id,
            status=row.status,
            output=row.output,
            error=row.error,
            waiting_for=row.waiting_for,
            paused_at=row.paused_at,
        )

    async def events(self, run_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """The run's events after ``after`` (stored ones, then live ones), ending with the
        first of ``STOP_EVENTS``, or without one if the gateway shuts down meanwhile.
        Heartbeat ticks are left out."""
        hub = context(self.app).hub
        async with contextlib.aclosing(
            hub.subscribe(stream_of(run_id), after, lambda e: e.type in STOP_EVENTS)
        ) as stream:
            async for event in stream:
                if event is not None:
                    yield event

    async def wait(self, run_id: str, on_event: Callable[[Event], None] | None = None) -> RunState:
        """Await the run's end, or the moment it waits (approval, input) or pauses at a
        breakpoint; returns its state then. ``on_event`` sees each event on the way."""
        async with contextlib.aclosing(self.events(run_id)) as stream:
            async for event in stream:
                if on_event is not None:
                    on_event(event)
        return await self.state(run_id)
