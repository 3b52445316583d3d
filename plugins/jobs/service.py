"""The jobs plugin's :class:`~plugins.jobs.contract.JobsAPI`: the listing and the
cancel of its routes, the cancel gate checked here since no route checks it for the
caller."""

from __future__ import annotations

from host.api import GatewayContext, Principal
from plugins.jobs import listing
from plugins.jobs.contract import JobsAPI
from plugins.jobs.models import JobList, JobRecord


class JobsService(JobsAPI):
    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx

    async def list_jobs(
        self,
        principal: Principal,
        *,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobList:
        return await listing.list_jobs(
            self._ctx, principal, status=status, source=source, limit=limit, cursor=cursor
        )

    async def cancel(self, principal: Principal, job_id: str, reason: str | None) -> JobRecord:
        self._ctx.auth.require_gate(principal, listing.GATE_CANCEL, "cancelling a job")
        return await listing.cancel(self._ctx, job_id, principal, reason)
