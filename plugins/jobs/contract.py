"""What a plugin implements to show its background work in ``/gateway/jobs``: a
:class:`JobSource` registered with ``gateway_register_job_sources`` (declared by the jobs
plugin: ``plugins/jobs/hookspecs.py``).

A job is any unit of background work with an owner: an asynchronous pipeline run, a
schedule's fire, a bridge or agent session, an export. Its id is ``<source>:<native
id>``. The jobs plugin applies ownership (a principal sees and cancels its own jobs;
``allow_jobs_read_all`` and ``allow_jobs_act_all`` everyone's) and merges the sources'
pages newest first; each source pages its own jobs by a cursor of its own (an opaque
string, usually an indexed sequence number), so ``GET /gateway/jobs`` stays one indexed
read per source however many jobs are stored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import sqlalchemy as sa

from host.api import GatewayContext, GatewayError, Principal
from plugins.jobs.models import JobList, JobRecord

JobStatus = Literal["pending", "running", "waiting", "paused", "completed", "failed", "cancelled"]
ACTIVE: tuple[str, ...] = ("pending", "running", "waiting", "paused")
FINISHED: tuple[str, ...] = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Job:
    """One job as a source reports it. ``native_id`` is the source's own id; ``position``
    the source's cursor just past this job (the next page starts after it)."""

    native_id: str
    kind: str
    status: str
    owner: str | None
    created_ms: int
    position: str
    started_ms: int | None = None
    finished_ms: int | None = None
    progress: dict[str, Any] | None = None  # e.g. {"done": 2, "total": 5, "unit": "steps"}
    detail: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None


@dataclass(frozen=True)
class JobQuery:
    """``owner`` None: every owner's jobs (the caller holds the read-all gate);
    ``statuses`` None: any status; ``after``: this source's cursor from the previous page."""

    owner: str | None
    statuses: Sequence[str] | None
    limit: int
    after: str | None = None


def newest_first(
    table: sa.Table, query: JobQuery, status_filter: Callable[[Sequence[str]], Any]
) -> sa.Select[Any]:
    """A source's page of rows of ``table`` (columns ``created_ms``, ``id``, ``owner``),
    newest first, after the keyset cursor ``"<created_ms>:<id>"`` of the page before;
    ``status_filter(statuses)`` is the source's where clause for ``query.statuses``.
    400 ``invalid_cursor`` for a cursor this server did not give."""
    stmt = (
        sa.select(table).order_by(table.c.created_ms.desc(), table.c.id.desc()).limit(query.limit)
    )
    if query.owner is not None:
        stmt = stmt.where(table.c.owner == query.owner)
    if query.statuses is not None:
        stmt = stmt.where(status_filter(query.statuses))
    if query.after:
        created, _, row_id = query.after.partition(":")
        try:
            created_ms = int(created)
        except ValueError:
            raise GatewayError(
                400, "invalid_cursor", "the cursor is not one this server gave"
            ) from None
        stmt = stmt.where(
            sa.or_(
                table.c.created_ms < created_ms,
                sa.and_(table.c.created_ms == created_ms, table.c.id < row_id),
            )
        )
    return stmt


class JobSource(Protocol):
    async def page(self, gateway: GatewayContext, query: JobQuery) -> list[Job]:
        """Up to ``query.limit`` jobs, newest first, after ``query.after``."""
        ...

    async def get(self, gateway: GatewayContext, native_id: str) -> Job | None:
        """One job, or None when the source has no such job."""
        ...

    async def cancel(
        self, gateway: GatewayContext, native_id: str, by: str, reason: str | None
    ) -> Job:
        """Stop the job for real and return it (status ``cancelled``); raise
        ``GatewayError(409, "job_finished", ...)`` when it had already finished."""
        ...


class JobsAPI:
    """The jobs plugin's service (``service(JobsAPI)``): what ``GET /gateway/jobs`` and
    ``POST /gateway/jobs/{job_id}/cancel`` do, for another plugin acting for
    ``principal`` (the dashboard's forms), with the same ownership and gates. A plain
    base class, so ``service(JobsAPI)`` type-checks; the plugin provides the
    implementation."""

    async def list_jobs(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobList:
        """``principal``'s jobs (everyone's with ``allow_jobs_read_all``), newest first."""
        raise NotImplementedError

    async def cancel(self, principal: Principal, job_id: str, reason: str | None) -> JobRecord:
        """Cancel for real: 403 without ``allow_jobs_cancel`` (or another's job without
        ``allow_jobs_act_all``), 404 ``job_not_found``, 409 ``job_finished``."""
        raise NotImplementedError


__all__ = ["ACTIVE", "FINISHED", "Job", "JobQuery", "JobSource", "JobStatus", "JobsAPI"]
