"""The approvals queue other plugins ask people through: an agent's permission request
waits here beside the runs' approval gates, is listed by ``GET /approvals`` and decided
by ``POST /approvals/{id}/approve|deny`` (and the ``gateway approvals`` commands).

Each approval has an event stream ``approval:<id>`` (``approval.requested``, then one
``approval.resolved``): a waiter follows it, so a decision taken in any process of the
gateway reaches it. Deciding is one conditional UPDATE (``status = 'pending'``), so an
approval is decided once, whoever races.

A run parked at a ``tool`` step whose call waits for approval (``waiting_for`` of type
``tool_approval``) is queued again by the decision, in the same transaction: the step's
resolution is the decision, and the step calls again with the approval's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from quart import Quart

from host.api import GatewayContext, GatewayError, Principal, context, now_ms, owned_by
from plugins.pipelines import runs
from plugins.pipelines.gates import GATE_APPROVE, GATE_READ_ALL
from plugins.pipelines.models import ApprovalRecord
from plugins.pipelines.tables import queue_approvals
from plugins.pipelines.tables import runs as run_rows

ID_PREFIX = "apr_"
RESOLVED = "approval.resolved"
DECISIONS = ("approved", "denied", "timed_out", "cancelled")


def approval_stream(approval_id: str) -> str:
    return f"approval:{approval_id}"


def is_queue_id(approval_id: str) -> bool:
    return approval_id.startswith(ID_PREFIX)


@dataclass(frozen=True)
class ApprovalDecision:
    """How an approval ended: ``status`` is approved, denied, timed_out or cancelled."""

    approval_id: str
    status: str
    approver: str | None = None
    reason: str | None = None

    @property
    def approved(self) -> bool:
        return self.status == "approved"


def not_found(approval_id: str) -> GatewayError:
    return GatewayError(404, "approval_not_found", f"no approval {approval_id!r}")


def record_of(row: Any) -> ApprovalRecord:
    return ApprovalRecord(
        id=row.id,
        source=row.source,
        subject=row.subject,
        run_id=row.run_id,
        status=row.status,
        message=row.message,
        details=row.details,
        owner=row.owner,
        requested_ms=row.requested_ms,
        resolved_ms=row.resolved_ms,
        approver=row.approver,
        reason=row.reason,
    )


class ApprovalQueue:
    """Ask for an approval and learn its decision (the ``ApprovalQueue`` service)."""

    def __init__(self, app: Quart) -> None:
        self.app = app

    @property
    def gateway(self) -> GatewayContext:
        return context(self.app)

    async def create(
        self,
        *,
        source: str,
        subject: str,
        message: str,
        owner: str | None,
        details: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Queue a pending approval; returns its id (``apr_...``). ``source`` says what
        asks (``agent_session``), ``subject`` which one (a session id), ``owner`` whose it
        is (``host.api.owner_key``: the owner sees it in ``GET /approvals``). With
        ``run_id`` it is also one of that run's approvals (its event goes on the run's
        stream too)."""
        approval_id = ID_PREFIX + uuid.uuid4().hex
        values = {
            "id": approval_id,
            "source": source,
            "subject": subject,
            "run_id": run_id,
            "status": "pending",
            "message": message,
            "details": details,
            "owner": owner,
            "requested_ms": now_ms(),
        }
        data = {"approval_id": approval_id, "source": source, "subject": subject}
        data["message"] = message
        store, hub = self.gateway.store, self.gateway.hub
        async with store.write() as conn:
            await conn.execute(queue_approvals.insert().values(**values))
            events = [
                await store.append_event(
                    approval_stream(approval_id), "approval.requested", data, conn
                )
            ]
            if run_id is not None:
                events.append(
                    await store.append_event(
                        runs.stream_of(run_id), "approval.requested", data, conn
                    )
                )
        for event in events:
            await hub.notify(event)
        return approval_id

    async def get(self, approval_id: str) -> ApprovalRecord:
        """The approval; 404 ``approval_not_found``."""
        async with self.gateway.store.read() as conn:
            row = (
                await conn.execute(
                    sa.select(queue_approvals).where(queue_approvals.c.id == approval_id)
                )
            ).first()
        if row is None:
            raise not_found(approval_id)
        return record_of(row)

    async def decision(self, approval_id: str) -> ApprovalDecision | None:
        """How it was decided; None while it is pending."""
        record = await self.get(approval_id)
        if record.status == "pending":
            return None
        return ApprovalDecision(approval_id, record.status, record.approver, record.reason)

    async def wait(self, approval_id: str, timeout: float | None = None) -> ApprovalDecision:
        """Await the decision; past ``timeout`` seconds the approval is resolved as
        ``timed_out`` (unless someone decided it just then: that decision is returned)."""
        hub = self.gateway.hub
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async with contextlib.aclosing(
                    hub.subscribe(approval_stream(approval_id), 0, lambda e: e.type == RESOLVED)
                ) as events:
                    async for event in events:
                        if event is not None and event.type == RESOLVED:
                            break
        found = await self.decision(approval_id)
        if found is not None:
            return found
        if hub.draining:
            await self.resolve(approval_id, "cancelled", None, "the gateway is shutting down")
        else:
            await self.resolve(approval_id, "timed_out", "timeout", "no decision in time")
        found = await self.decision(approval_id)
        assert found is not None
        return found

    async def resolve(
        self, approval_id: str, status: str, approver: str | None, reason: str | None
    ) -> bool:
        """Decide a pending approval (``status`` one of ``DECISIONS``); False when it was
        no longer pending (nothing changes)."""
        store = self.gateway.store
        async with store.write() as conn:
            row = (
                await conn.execute(
                    sa.select(queue_approvals.c.run_id).where(queue_approvals.c.id == approval_id)
                )
            ).first()
            if row is None:
                raise not_found(approval_id)
            changed = await conn.execute(
                queue_approvals.update()
                .where(queue_approvals.c.id == approval_id, queue_approvals.c.status == "pending")
                .values(status=status, approver=approver, reason=reason, resolved_ms=now_ms())
            )
            if changed.rowcount != 1:
                return False
            data = {"approval_id": approval_id, "decision": status, "approver": approver}
            data["reason"] = reason
            events = [await store.append_event(approval_stream(approval_id), RESOLVED, data, conn)]
            resumed: list[tuple[str, dict[str, Any]]] = []
            if row.run_id is not None:
                events.append(
                    await store.append_event(runs.stream_of(row.run_id), RESOLVED, data, conn)
                )
                # Locked first: a worker parking the run commits before this reads it.
                await conn.execute(
                    store.dialect.lock(sa.select(run_rows.c.id).where(run_rows.c.id == row.run_id))
                )
                resumed = await resume_tool_wait(conn, row.run_id, approval_id, data)
                for type_, event_data in resumed:
                    events.append(
                        await store.append_event(
                            runs.stream_of(row.run_id), type_, event_data, conn
                        )
                    )
        for event in events:
            await self.gateway.hub.notify(event)
        if resumed:
            wake_worker(self.app)
        return True

    async def decide(
        self, approval_id: str, decision: str, principal: Principal, reason: str | None
    ) -> ApprovalRecord:
        """Approve or deny for ``principal`` (who needs the approve gate, as for a run's
        gate); 404 ``approval_not_found``, 409 ``approval_not_pending``."""
        self.gateway.auth.require_gate(principal, GATE_APPROVE, "deciding an approval")
        if not await self.resolve(approval_id, decision, principal.name, reason):
            current = await self.get(approval_id)
            raise GatewayError(
                409,
                "approval_not_pending",
                f"approval {approval_id!r} was already decided ({current.status})",
            )
        return await self.get(approval_id)

    async def cancel(self, approval_id: str, reason: str) -> bool:
        """Withdraw a pending approval (its asker no longer waits)."""
        return await self.resolve(approval_id, "cancelled", None, reason)

    async def cancel_subject(self, source: str, subject: str, reason: str) -> int:
        """Withdraw every pending approval of ``source``/``subject``; how many."""
        async with self.gateway.store.read() as conn:
            ids = (
                (
                    await conn.execute(
                        sa.select(queue_approvals.c.id).where(
                            queue_approvals.c.source == source,
                            queue_approvals.c.subject == subject,
                            queue_approvals.c.status == "pending",
                        )
                    )
                )
                .scalars()
                .all()
            )
        return sum([await self.cancel(i, reason) for i in ids])


async def resume_tool_wait(
    conn: Any, run_id: str, approval_id: str, decided: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """If ``run_id`` waits at a tool step for ``approval_id``: store ``decided`` as that
    step's resolution and queue the run again. The run events to append (none if it does
    not wait for it)."""
    row = (
        await conn.execute(
            sa.select(run_rows.c.status, run_rows.c.waiting_for, run_rows.c.resolutions).where(
                run_rows.c.id == run_id
            )
        )
    ).first()
    waiting = (row.waiting_for if row is not None else None) or {}
    if (
        row is None
        or row.status != "waiting"
        or waiting.get("type") != "tool_approval"
        or waiting.get("approval_id") != approval_id
    ):
        return []
    now = now_ms()
    step = waiting["step"]
    resolution = {
        "approval_id": approval_id,
        "decision": decided["decision"],
        "approver": decided.get("approver"),
        "reason": decided.get("reason"),
        "at_ms": now,
    }
    await conn.execute(
        run_rows.update()
        .where(run_rows.c.id == run_id)
        .values(
            status="pending",
            waiting_for=None,
            resolutions={**(row.resolutions or {}), step: resolution},
            updated_ms=now,
        )
    )
    by = decided.get("approver") or "approval"
    return [("run.resumed", {"run_id": run_id, "step": step, "by": by})]


async def tool_wait_decided(conn: Any, run_id: str, approval_id: str) -> list[tuple[str, Any]]:
    """For a run that is parking at a tool step: if its approval was decided meanwhile,
    queue it again at once (:func:`resume_tool_wait`)."""
    row = (
        await conn.execute(
            sa.select(
                queue_approvals.c.status, queue_approvals.c.approver, queue_approvals.c.reason
            ).where(queue_approvals.c.id == approval_id)
        )
    ).first()
    if row is None or row.status == "pending":
        return []
    decided = {"decision": row.status, "approver": row.approver, "reason": row.reason}
    return await resume_tool_wait(conn, run_id, approval_id, decided)


async def cancel_for_run(conn: Any, store: Any, run_id: str, reason: str) -> list[Any]:
    """Withdraw the pending queue approvals of a run that ends (a tool step's held call):
    in the caller's transaction; the events to publish once it commits."""
    ids = (
        (
            await conn.execute(
                sa.select(queue_approvals.c.id).where(
                    queue_approvals.c.run_id == run_id, queue_approvals.c.status == "pending"
                )
            )
        )
        .scalars()
        .all()
    )
    events = []
    for approval_id in ids:
        await conn.execute(
            queue_approvals.update()
            .where(queue_approvals.c.id == approval_id, queue_approvals.c.status == "pending")
            .values(status="cancelled", reason=reason, resolved_ms=now_ms())
        )
        data = {"approval_id": approval_id, "decision": "cancelled", "approver": None}
        data["reason"] = reason
        events.append(await store.append_event(approval_stream(approval_id), RESOLVED, data, conn))
    return events


def wake_worker(app: Quart) -> None:
    """Let this process's worker claim a run queued again now (others poll)."""
    from plugins.pipelines.engine import engine_of  # the engine imports this module

    with contextlib.suppress(GatewayError):
        engine_of(app).state.wake.set()


def visible(reader: Principal) -> sa.ColumnElement[bool]:
    """The queue approvals ``reader`` may list: every one for an approver, else its own."""
    if reader.has_gate(GATE_APPROVE):
        return sa.true()
    return owned_by(queue_approvals.c.owner, reader, GATE_READ_ALL)
