"""Writing records: :class:`AuditWriter` commits what callers hand it in groups, and
:class:`AuditService` is the ``AuditLog`` service other plugins call.

Group commit: a caller's record joins the group being gathered and the caller waits for
the group's one transaction (the append holds a named lock, so one transaction for many
concurrent requests is much cheaper than one each). A caller that goes away (a client
that disconnects) does not take its record with it: the group is written regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from host.api import Store, request_actor
from plugins.audit.chain import append, entry
from plugins.audit.contract import SOURCES, AuditLog, AuditRecord
from plugins.audit.metrics import AuditMetrics

log = logging.getLogger("gateway.audit")


class AuditWriter:
    def __init__(self, store: Store, metrics: AuditMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self._pending: list[tuple[AuditRecord, asyncio.Future[AuditRecord]]] = []
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        self.written = 0

    async def write(self, record: AuditRecord) -> AuditRecord:
        """Store ``record`` (a :func:`chain.entry`) and return it as stored."""
        future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((record, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="audit-writer")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                stored = await append(self.store, [record for record, _ in group])
            except Exception as exc:
                self.failures += len(group)
                if self.metrics is not None:
                    self.metrics.write_failures.inc(len(group))
                log.exception("could not store %d audit records", len(group))
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.written += len(stored)
            if self.metrics is not None:
                for record in stored:
                    self.metrics.records.labels(record.source).inc()
            for (_, future), record in zip(group, stored, strict=True):
                if not future.done():
                    future.set_result(record)

    async def close(self) -> None:
        """Let the group in flight commit (at shutdown, before the store closes)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(Exception):
                await task


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A caller that went away never reads its future's failure: read it here (the
    # failure itself is logged by the writer).
    if not future.cancelled():
        future.exception()


class AuditService(AuditLog):
    """The ``AuditLog`` service (``plugins/audit/contract.py``)."""

    def __init__(self, writer: AuditWriter) -> None:
        self.writer = writer

    async def record(
        self,
        action: str,
        *,
        outcome: str = "success",
        target: str | None = None,
        reason_code: str | None = None,
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
        source: str = "plugin",
    ) -> AuditRecord:
        if source not in SOURCES:
            raise ValueError(f"audit source must be one of {', '.join(SOURCES)} (got {source!r})")
        if actor is None:
            principal = request_actor()
            actor = principal.key if principal is not None else None
        return await self.writer.write(
            entry(
                source,
                action,
                outcome=outcome,
                target=target,
                reason_code=reason_code,
                actor=actor,
                detail=detail,
            )
        )
