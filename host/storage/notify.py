"""Cross-process wake-ups on PostgreSQL: ``LISTEN``/``NOTIFY`` carrying stream names.

A trigger on the events table (host migration 3) notifies channel :data:`CHANNEL` with
the name of each stream a transaction appended to, when it commits; PostgreSQL sends a
name once per transaction however many events it added there, so a batch costs one
notification. Each gateway worker keeps one connection that listens and wakes the
stream's tail (:class:`host.events.EventHub`), which then reads the events table: a
notification says only *where* to look, the table stays the source of truth, and the
tails' polling stays the fallback (a lost connection, a missed notification).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger("gateway.store")

CHANNEL = "gateway_events"  # named in CREATE_TRIGGER
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
KEEPALIVE_SECONDS = 30.0

# A statement-level trigger: one pg_notify per stream per statement (and PostgreSQL
# folds equal notifications of one transaction into one).
CREATE_TRIGGER = (
    """
    CREATE OR REPLACE FUNCTION gateway_events_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('gateway_events', s.stream) FROM (SELECT DISTINCT stream FROM added) s;
        RETURN NULL;
    END
    $$
    """,
    "DROP TRIGGER IF EXISTS gateway_events_notify ON gateway_events",
    """
    CREATE TRIGGER gateway_events_notify AFTER INSERT ON gateway_events
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_events_notify()
    """,
)


def create_notify_trigger(conn: sa.Connection) -> None:
    if conn.dialect.name != "postgresql":
        return  # one process's writers wake its tails in-process; others poll
    for statement in CREATE_TRIGGER:
        conn.exec_driver_sql(statement)


class StreamListener:
    """One connection that listens on :data:`CHANNEL` and calls ``on_stream(name)`` for
    every notification. When the connection is lost it connects again (backing off up
    to :data:`RETRY_MAX_SECONDS`) and then calls ``on_gap()``: notifications sent in
    between are gone, so whoever waits for them should look for itself."""

    def __init__(
        self, url: str, on_stream: Callable[[str], None], on_gap: Callable[[], None]
    ) -> None:
        self._engine = create_async_engine(url, poolclass=NullPool)
        self._on_stream = on_stream
        self._on_gap = on_gap
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.connections = 0  # how many times it (re)connected

    async def start(self, timeout: float = 10.0) -> None:
        """Start listening; waits until the first connection listens (or ``timeout``
        passes: then it goes on trying in the background, the tails poll meanwhile)."""
        self._task = asyncio.create_task(self._run(), name="store-listener")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.connected.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._engine.dispose()

    async def _run(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            try:
                async with self._engine.connect() as conn:
                    lost = await self._listen(conn)
                    delay = RETRY_MIN_SECONDS
                    await self._watch(conn, lost)
                    log.warning("the store's notification connection was lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "cannot listen for store notifications (%s); polling until it can",
                    type(exc).__name__,
                )
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _watch(self, conn: AsyncConnection, lost: asyncio.Event) -> None:
        """Return when the connection is gone: closed (``lost``), or silent (a peer that
        vanished without closing, which only a query finds out)."""
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    await lost.wait()
                    return
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    await conn.exec_driver_sql("SELECT 1")
                    await conn.rollback()
            except (TimeoutError, sa.exc.DBAPIError, OSError):
                return

    async def _listen(self, conn: AsyncConnection) -> asyncio.Event:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        lost = asyncio.Event()

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            self._on_stream(payload)

        driver.add_termination_listener(lambda _conn: lost.set())
        await driver.add_listener(CHANNEL, notified)
        self.connections += 1
        self.connected.set()
        if self.connections > 1:
            self._on_gap()
        return lost
