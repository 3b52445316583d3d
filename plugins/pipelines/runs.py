"""Run state: the states a run goes through, its event stream, and its row as the routes
and the API show it (``record``: the one projection of a run row), with the reads behind
them (a run, a page of runs, the paused runs, approvals)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayError, Principal, owned_by
from plugins.pipelines import approval_queue
from plugins.pipelines.gates import GATE_APPROVE, GATE_READ_ALL
from plugins.pipelines.idempotency import shown
from plugins.pipelines.models import (
    ApprovalList,
    ApprovalQuery,
    ApprovalRecord,
    RunList,
    RunQuery,
    RunRecord,
    StepResult,
)
from plugins.pipelines.tables import approvals, runs, step_results

ACTIVE = ("pending", "running", "waiting", "paused")
TERMINAL = ("completed", "failed", "cancelled")
STATES = (*ACTIVE, *TERMINAL)
TERMINAL_EVENTS = ("run.completed", "run.failed", "run.cancelled")
# Events after which a run needs nothing more from its caller: it ended, or it waits for a
# person (an approval, an input) or for a debugger (a breakpoint).
STOP_EVENTS = frozenset({*TERMINAL_EVENTS, "run.waiting", "run.paused"})


def stream_of(run_id: str) -> str:
    return f"run:{run_id}"


def jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return json.loads(json.dumps(value, default=str))


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

    @classmethod
    def of(cls, run: RunRecord) -> RunState:
        """The state part of a run's record (``record``)."""
        return cls(run.id, **run.model_dump(include=_STATE_FIELDS))


_STATE_FIELDS = {"pipeline_id", "status", "output", "error", "waiting_for", "paused_at"}


def not_found(run_id: str) -> GatewayError:
    # The very error of an unknown run: another principal's run is not revealed.
    return GatewayError(404, "run_not_found", f"no run {run_id!r}")


async def run_row(conn: AsyncConnection, run_id: str) -> Any:
    """The run's row; 404 ``run_not_found``."""
    row = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
    if row is None:
        raise not_found(run_id)
    return row


async def owner_of(conn: AsyncConnection, run_id: str) -> str | None:
    """The run's owner; 404 ``run_not_found``."""
    found = (await conn.execute(sa.select(runs.c.owner).where(runs.c.id == run_id))).first()
    if found is None:
        raise not_found(run_id)
    owner: str | None = found.owner
    return owner


async def exists(conn: AsyncConnection, run_id: str) -> bool:
    found = (await conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id))).first()
    return found is not None


async def latest_approval(conn: AsyncConnection, run_id: str) -> ApprovalRecord:
    """The run's most recently requested approval gate."""
    stmt = (
        sa.select(approvals, runs.c.owner)
        .select_from(approvals.join(runs, runs.c.id == approvals.c.run_id))
        .where(approvals.c.run_id == run_id)
        .order_by(approvals.c.requested_ms.desc())
        .limit(1)
    )
    row = (await conn.execute(stmt)).one()
    return ApprovalRecord(id=row.run_id, **row._asdict())


async def step_rows(conn: AsyncConnection, run_id: str) -> Sequence[Any]:
    """The run's finished steps, in the order they finished."""
    query = sa.select(step_results).where(step_results.c.run_id == run_id)
    return (await conn.execute(query.order_by(step_results.c.n))).all()


def record(row: Any, steps: Sequence[Any] | None = None) -> RunRecord:
    """A run row (with its step rows) as the routes and the API show it: its columns of
    the same names, the idempotency key as its caller sent it, the index of the next
    top-level step, and the steps with their durations."""
    fields = _columns(row, RunRecord)
    fields["idempotency_key"] = shown(row.idempotency_key)
    fields["next_step_index"] = row.cursor
    fields["steps"] = [
        StepResult(**_columns(s, StepResult), duration_ms=s.finished_ms - s.started_ms)
        for s in steps or []
    ]
    return RunRecord(**fields)


def _columns(row: Any, model: type[BaseModel]) -> dict[str, Any]:
    return {k: v for k, v in row._mapping.items() if k in model.model_fields}


async def page(conn: AsyncConnection, query: RunQuery, reader: Principal) -> RunList:
    """The runs ``reader`` may read, newest first, filtered and paged by ``query``."""
    stmt = sa.select(runs).order_by(runs.c.n.desc()).limit(query.limit + 1)
    if query.pipeline:
        stmt = stmt.where(runs.c.pipeline_id == query.pipeline)
    if query.status:
        stmt = stmt.where(runs.c.status == query.status)
    if query.since_ms is not None:
        stmt = stmt.where(runs.c.created_ms >= query.since_ms)
    if query.until_ms is not None:
        stmt = stmt.where(runs.c.created_ms < query.until_ms)
    if query.before is not None:
        stmt = stmt.where(runs.c.n < query.before)
    stmt = stmt.where(owned_by(runs.c.owner, reader, GATE_READ_ALL))
    rows = (await conn.execute(stmt)).all()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return RunList(
        runs=[record(r) for r in rows], next_before=rows[-1].n if more and rows else None
    )


async def numbered(
    conn: AsyncConnection,
    owner: str | None,
    statuses: Sequence[str] | None,
    before: int | None,
    limit: int,
    pipeline_id: str | None = None,
) -> list[tuple[int, RunRecord]]:
    """``(n, record)`` of the runs of ``owner`` (every run's when None), newest first by
    ``n``, below ``before``: a keyset page for callers that apply ownership themselves."""
    stmt = sa.select(runs).order_by(runs.c.n.desc()).limit(limit)
    if owner is not None:
        stmt = stmt.where(runs.c.owner == owner)
    if statuses is not None:
        stmt = stmt.where(runs.c.status.in_(statuses))
    if before is not None:
        stmt = stmt.where(runs.c.n < before)
    if pipeline_id is not None:
        stmt = stmt.where(runs.c.pipeline_id == pipeline_id)
    return [(row.n, record(row)) for row in (await conn.execute(stmt)).all()]


async def paused(conn: AsyncConnection, reader: Principal) -> RunList:
    """The runs paused at a breakpoint that ``reader`` may read, oldest first."""
    stmt = (
        sa.select(runs)
        .where(runs.c.status == "paused", owned_by(runs.c.owner, reader, GATE_READ_ALL))
        .order_by(runs.c.n)
    )
    rows = (await conn.execute(stmt)).all()
    return RunList(runs=[record(r) for r in rows])


async def approvals_page(
    conn: AsyncConnection, query: ApprovalQuery, reader: Principal
) -> ApprovalList:
    """Approvals of the runs ``reader`` may read (every run's for an approver), oldest
    first."""
    approver = reader.has_gate(GATE_APPROVE)
    stmt = (
        sa.select(approvals, runs.c.owner)
        .select_from(approvals.join(runs, runs.c.id == approvals.c.run_id))
        .where(sa.true() if approver else owned_by(runs.c.owner, reader, GATE_READ_ALL))
        .order_by(approvals.c.requested_ms)
        .limit(query.limit)
    )
    if query.status != "all":
        stmt = stmt.where(approvals.c.status == query.status)
    rows = (await conn.execute(stmt)).all()
    found = [ApprovalRecord(id=r.run_id, **r._asdict()) for r in rows]
    # Other plugins' approvals (approval_queue.py) beside the runs' gates, oldest first.
    queued = (
        sa.select(approval_queue.queue_approvals)
        .where(approval_queue.visible(reader))
        .order_by(approval_queue.queue_approvals.c.requested_ms)
        .limit(query.limit)
    )
    if query.status != "all":
        queued = queued.where(approval_queue.queue_approvals.c.status == query.status)
    found += [approval_queue.record_of(r) for r in (await conn.execute(queued)).all()]
    found.sort(key=lambda a: a.requested_ms)
    return ApprovalList(approvals=found[: query.limit])
