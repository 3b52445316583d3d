"""Agent (ACP) sessions as jobs of the jobs plugin (kind ``agent_session``), paged newest
first by ``(created_ms, id)``; cancelling one stops its agent process and closes it.
Registered through ``gateway_register_job_sources`` when the jobs plugin is on; the jobs
plugin applies ownership before calling here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from host.api import GatewayContext, GatewayError
from plugins.agents.tables import sessions

if TYPE_CHECKING:
    from plugins.agents.service import AgentSessions
    from plugins.jobs.contract import Job, JobQuery

# The close reason a cancel through /gateway/jobs leaves: how a closed session reads
# ``cancelled`` rather than ``completed``.
CANCELLED = "cancelled"


def _service(gateway: GatewayContext) -> AgentSessions | None:
    from plugins.agents import routes

    found: AgentSessions | None = gateway.extras.get(routes.SERVICE_KEY)
    return found


def _status(row: Any) -> str:
    if row.state == "active":
        return "running"
    if row.state == "idle":
        return "waiting"  # open, waiting for its next prompt
    if row.state == "closed" and (row.close_reason or "").startswith(CANCELLED):
        return "cancelled"
    return "completed"  # closed by its owner, or expired idle


def _where(statuses: Any) -> Any:
    """The session states behind the job statuses asked for."""
    cancelled = sa.and_(sessions.c.state == "closed", sessions.c.close_reason.like(f"{CANCELLED}%"))
    terms: list[Any] = []
    for status in statuses:
        if status == "running":
            terms.append(sessions.c.state == "active")
        elif status == "waiting":
            terms.append(sessions.c.state == "idle")
        elif status == "cancelled":
            terms.append(cancelled)
        elif status == "completed":
            terms.append(sessions.c.state == "expired")
            terms.append(
                sa.and_(
                    sessions.c.state == "closed",
                    sa.not_(sa.func.coalesce(sessions.c.close_reason, "").like(f"{CANCELLED}%")),
                )
            )
    return sa.or_(*terms) if terms else sa.false()


def _job(row: Any, live: bool) -> Job:
    from plugins.jobs.contract import Job

    return Job(
        native_id=row.id,
        kind="agent_session",
        status=_status(row),
        owner=row.owner,
        created_ms=row.created_ms,
        position=f"{row.created_ms}:{row.id}",
        started_ms=row.created_ms,
        finished_ms=row.closed_ms if row.state in ("closed", "expired") else None,
        progress={"state": row.state, "attached": live, "last_activity_ms": row.last_seen_ms},
        detail={"agent_id": row.agent_id, "run_id": row.run_id, "close_reason": row.close_reason},
        created_by=row.created_by,
    )


class AgentSessionJobs:
    async def page(self, gateway: GatewayContext, query: JobQuery) -> list[Job]:
        agents = _service(gateway)
        if agents is None:
            return []
        from plugins.jobs.contract import newest_first

        stmt = newest_first(sessions, query, _where)
        async with gateway.store.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [_job(r, r.id in agents.live) for r in rows]

    async def get(self, gateway: GatewayContext, native_id: str) -> Job | None:
        agents = _service(gateway)
        if agents is None:
            return None
        async with gateway.store.read() as conn:
            row = (
                await conn.execute(sa.select(sessions).where(sessions.c.id == native_id))
            ).first()
        return None if row is None else _job(row, native_id in agents.live)

    async def cancel(
        self, gateway: GatewayContext, native_id: str, by: str, reason: str | None
    ) -> Job:
        agents = _service(gateway)
        if agents is None:
            raise GatewayError(503, "service_unavailable", "the agents plugin is not running")
        before = await self.get(gateway, native_id)
        if before is None:
            raise GatewayError(404, "job_not_found", f"no job agents:{native_id}")
        if before.finished_ms is not None or before.status in ("completed", "cancelled"):
            raise GatewayError(
                409, "job_finished", f"agent session {native_id!r} has already ended"
            )
        note = f"{CANCELLED} by {by}" + (f": {reason}" if reason else "")
        # Ownership was checked by the jobs plugin: close as the service itself.
        await agents.close(native_id, None, note)
        after = await self.get(gateway, native_id)
        assert after is not None
        return after
