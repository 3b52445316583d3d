"""Bridge sessions as jobs of the jobs plugin (kind ``bridge_session``), paged newest
first by ``(created_ms, id)``; cancelling one closes it (and the ACP agent session that
serves it, if any). Registered through ``gateway_register_job_sources`` when the jobs
plugin is on; the jobs plugin applies ownership before calling here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from host.api import GatewayContext, GatewayError
from plugins.coding_agent_bridge import agent_link
from plugins.coding_agent_bridge.api import BridgeAPI
from plugins.coding_agent_bridge.tables import followups, sessions

if TYPE_CHECKING:
    from plugins.jobs.contract import Job, JobQuery

# The close reason a cancel through /gateway/jobs leaves: how a closed session reads
# ``cancelled`` rather than ``completed``.
CANCELLED = "cancelled"


def _dispatcher(gateway: GatewayContext) -> agent_link.Dispatcher | None:
    found: agent_link.Dispatcher | None = gateway.extras.get(agent_link.DISPATCHER_KEY)
    return found


def _was_cancelled() -> Any:
    return sa.func.coalesce(sessions.c.close_reason, "").like(f"{CANCELLED}%")


def _status(row: Any) -> str:
    if row.state == "open":
        return "running"
    if row.state == "closed" and (row.close_reason or "").startswith(CANCELLED):
        return "cancelled"
    return "completed"  # closed by its owner, or expired idle


def _where(statuses: Any) -> Any:
    terms: list[Any] = []
    for status in statuses:
        if status == "running":
            terms.append(sessions.c.state == "open")
        elif status == "cancelled":
            terms.append(sa.and_(sessions.c.state == "closed", _was_cancelled()))
        elif status == "completed":
            terms.append(sessions.c.state == "expired")
            terms.append(sa.and_(sessions.c.state == "closed", sa.not_(_was_cancelled())))
    return sa.or_(*terms) if terms else sa.false()


def _job(row: Any, queued: int) -> Job:
    from plugins.jobs.contract import Job

    return Job(
        native_id=row.id,
        kind="bridge_session",
        status=_status(row),
        owner=row.owner,
        created_ms=row.created_ms,
        position=f"{row.created_ms}:{row.id}",
        started_ms=row.created_ms,
        finished_ms=row.closed_ms if row.state != "open" else None,
        progress={
            "state": row.state,
            "followups_queued": queued,
            "last_activity_ms": row.last_seen_ms,
        },
        detail={
            "workspace": row.workspace,
            "agent": row.agent,
            "agent_session_id": row.agent_session_id,
            "close_reason": row.close_reason,
        },
        created_by=row.created_by,
    )


async def _jobs(gateway: GatewayContext, stmt: Any) -> list[Job]:
    async with gateway.store.read() as conn:
        rows = (await conn.execute(stmt)).all()
        ids = [r.id for r in rows]
        counts: dict[str, int] = {}
        if ids:
            count = (
                sa.select(followups.c.session_id, sa.func.count())
                .where(followups.c.session_id.in_(ids), followups.c.status == "queued")
                .group_by(followups.c.session_id)
            )
            counts = {sid: int(n) for sid, n in (await conn.execute(count)).all()}
    return [_job(r, counts.get(r.id, 0)) for r in rows]


class BridgeSessionJobs:
    async def page(self, gateway: GatewayContext, query: JobQuery) -> list[Job]:
        if _dispatcher(gateway) is None:
            return []
        from plugins.jobs.contract import newest_first

        stmt = newest_first(sessions, query, _where)
        return await _jobs(gateway, stmt)

    async def get(self, gateway: GatewayContext, native_id: str) -> Job | None:
        if _dispatcher(gateway) is None:
            return None
        found = await _jobs(gateway, sa.select(sessions).where(sessions.c.id == native_id))
        return found[0] if found else None

    async def cancel(
        self, gateway: GatewayContext, native_id: str, by: str, reason: str | None
    ) -> Job:
        dispatcher = _dispatcher(gateway)
        if dispatcher is None:
            raise GatewayError(
                503, "service_unavailable", "the coding_agent_bridge plugin is not running"
            )
        note = f"{CANCELLED} by {by}" + (f": {reason}" if reason else "")
        # Ownership was checked by the jobs plugin: close as the plugin itself.
        record, changed = await BridgeAPI(dispatcher.app).end(native_id, None, "closed", note)
        if not changed:
            raise GatewayError(
                409, "job_finished", f"bridge session {native_id!r} has already ended"
            )
        await agent_link.stop(dispatcher.app, record, note)
        job = await self.get(gateway, native_id)
        assert job is not None
        return job
