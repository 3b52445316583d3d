"""Writes to a run, each with the events it reports: the events are appended in the
write's own transaction and published (``EventHub.notify``) only after it commits. A
write by the worker running the run is fenced: it lands only while this worker still
holds the run, checked in the same transaction, so nothing is stored after a cancel (from
any process) or once another worker took the run over (``LostRun``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Event, GatewayContext, now_ms
from plugins.pipelines.runs import stream_of
from plugins.pipelines.tables import runs
from plugins.pipelines.worker_state import WorkerState

# Events a transaction appends to a run's stream: (type, data without ``run_id``).
Written = list[tuple[str, dict[str, Any]]]


class LostRun(Exception):
    """The run is no longer ours to advance (cancelled, or our lease lapsed)."""


class RunWriter:
    def __init__(self, gateway: GatewayContext, worker: WorkerState) -> None:
        self.store = gateway.store
        self.hub = gateway.hub
        self.worker = worker
        # Transactions that must end even if their run's task is cancelled; a stopping
        # engine waits for them.
        self.critical: set[asyncio.Future[Any]] = set()

    async def shielded(self, coro: Awaitable[Any]) -> Any:
        """Run a store transaction to its end even if the run's task is cancelled meanwhile
        (a cancel mid-transaction would leave the connection holding the write lock)."""
        task = asyncio.ensure_future(coro)
        self.critical.add(task)
        task.add_done_callback(self.critical.discard)
        return await asyncio.shield(task)

    async def notify(self, events: list[Event]) -> None:
        for event in events:
            await self.hub.notify(event)

    async def publish(self, run_id: str, type_: str, data: dict[str, Any]) -> Event:
        """Append a step's event (delta, usage, retry) to the run's stream, fenced like
        every write of a run: only while this worker holds the run, checked in the same
        transaction, so nothing is stored after a cancel (from any process) or once
        another worker took the run over. Otherwise ``LostRun``, and the run's task is
        cancelled."""

        async def transaction() -> Event | None:
            async with self.store.write() as conn:
                # FOR SHARE (PostgreSQL; SQLite's one writer already orders them): a
                # cancel committing on another replica between this check and the insert
                # would leave a delta after its run.cancelled. Its row lock waits for
                # this transaction, or this check, re-read after it, finds the run gone.
                held = await conn.execute(
                    sa.select(runs.c.id)
                    .where(
                        runs.c.id == run_id,
                        runs.c.status == "running",
                        runs.c.lease_owner == self.worker.worker_id,
                    )
                    .with_for_update(read=True)
                )
                if held.first() is None:
                    return None
                return await self.store.append_event(
                    stream_of(run_id), type_, {"run_id": run_id, **data}, conn
                )

        event: Event | None = await self.shielded(transaction())
        if event is None:
            self.worker.stop_tasks([run_id])
            raise LostRun(run_id)
        await self.hub.notify(event)
        return event

    async def commit(
        self,
        run_id: str,
        fn: Callable[[AsyncConnection], Awaitable[Written]],
    ) -> None:
        """Run ``fn`` in a write transaction; it returns the events to append with it.
        The events are published after the commit."""

        async def transaction() -> list[Event]:
            async with self.store.write() as conn:
                return await self.append(conn, run_id, await fn(conn))

        await self.notify(await self.shielded(transaction()))

    async def append(self, conn: AsyncConnection, run_id: str, written: Written) -> list[Event]:
        """Append ``written`` (type, data) to the run's stream in ``conn``'s transaction;
        each event's data starts with ``run_id``."""
        return [
            await self.store.append_event(stream_of(run_id), t, {"run_id": run_id, **d}, conn)
            for t, d in written
        ]

    async def guarded_update(self, conn: AsyncConnection, run_id: str, **values: Any) -> None:
        """Update the run's row while this worker holds it; ``LostRun`` otherwise."""
        result = await conn.execute(
            runs.update()
            .where(
                runs.c.id == run_id,
                runs.c.status == "running",
                runs.c.lease_owner == self.worker.worker_id,
            )
            .values(updated_ms=now_ms(), **values)
        )
        if not result.rowcount:
            raise LostRun(run_id)
