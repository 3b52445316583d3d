"""One view of every source's jobs: ownership applied once, the sources' pages merged
newest first. The cursor holds each source's own position, so a page never repeats or
skips a job whatever order the sources keep, and each source reads one indexed page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from host.api import GatewayContext, GatewayError, Principal, owner_key, require_owner
from plugins.jobs.contract import ACTIVE, FINISHED, Job, JobQuery, JobSource
from plugins.jobs.models import JobList, JobRecord

GATE_READ_ALL = "allow_jobs_read_all"
GATE_ACT_ALL = "allow_jobs_act_all"
GATE_CANCEL = "allow_jobs_cancel"
JOBS_STREAM = "jobs"


def statuses_of(status: str | None) -> Sequence[str] | None:
    if status is None:
        return None
    if status == "active":
        return ACTIVE
    if status == "finished":
        return FINISHED
    return (status,)


def record(source: str, job: Job) -> JobRecord:
    return JobRecord(
        id=f"{source}:{job.native_id}",
        source=source,
        kind=job.kind,
        status=job.status,
        owner=job.owner,
        created_by=job.created_by,
        created_ms=job.created_ms,
        started_ms=job.started_ms,
        finished_ms=job.finished_ms,
        progress=job.progress,
        detail=job.detail,
    )


def _bad_cursor() -> GatewayError:
    return GatewayError(
        400, "invalid_query", "cursor: not a next_cursor this gateway gave", param="cursor"
    )


def decode_cursor(cursor: str | None) -> dict[str, str | None]:
    if not cursor:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
    except (ValueError, binascii.Error):
        raise _bad_cursor() from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise _bad_cursor()
    return data


def encode_cursor(positions: dict[str, str | None]) -> str:
    raw = json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sources(ctx: GatewayContext) -> dict[str, JobSource]:
    registry = ctx.registry("job_sources")
    return {name: registry[name] for name in registry}


async def list_jobs(
    ctx: GatewayContext,
    reader: Principal,
    *,
    status: str | None,
    source: str | None,
    limit: int,
    cursor: str | None,
) -> JobList:
    known = sources(ctx)
    if source is not None and source not in known:
        raise GatewayError(
            400, "invalid_query", f"source: no job source {source!r}", param="source"
        )
    positions = decode_cursor(cursor)
    owner = None if reader.has_gate(GATE_READ_ALL) else owner_key(reader)
    statuses = statuses_of(status)
    fetched: dict[str, list[Job]] = {}
    for name, src in known.items():
        if (source is not None and name != source) or (
            name in positions and positions[name] is None
        ):
            continue
        query = JobQuery(owner, statuses, limit + 1, positions.get(name))
        fetched[name] = list(await src.page(ctx, query))
    # A k-way merge over the sources' heads: each source is consumed in its own order.
    taken: dict[str, int] = {name: 0 for name in fetched}
    page: list[JobRecord] = []
    while len(page) < limit:
        heads = [(jobs[taken[n]], n) for n, jobs in fetched.items() if taken[n] < len(jobs)]
        if not heads:
            break
        job, name = max(heads, key=lambda h: (h[0].created_ms, h[1]))
        taken[name] += 1
        page.append(record(name, job))
    next_positions: dict[str, str | None] = dict(positions)
    more = False
    for name, jobs in fetched.items():
        used = taken[name]
        if used == len(jobs) and len(jobs) <= limit:
            next_positions[name] = None  # exhausted
        else:
            more = True
            if used:
                next_positions[name] = jobs[used - 1].position
    return JobList(jobs=page, next_cursor=encode_cursor(next_positions) if more else None)


def split_id(job_id: str) -> tuple[str, str]:
    name, sep, native = job_id.partition(":")
    return name, native if sep else ""


async def find(ctx: GatewayContext, job_id: str, reader: Principal) -> tuple[str, Job]:
    """The job ``reader`` may read; 404 ``job_not_found`` (also for another's job)."""
    missing = GatewayError(404, "job_not_found", f"no job {job_id!r}")
    name, native = split_id(job_id)
    src = sources(ctx).get(name)
    if src is None or not native:
        raise missing
    job = await src.get(ctx, native)
    if job is None:
        raise missing
    require_owner(reader, job.owner, read_all=GATE_READ_ALL, not_found=missing)
    return name, job


async def cancel(
    ctx: GatewayContext, job_id: str, principal: Principal, reason: str | None
) -> JobRecord:
    """Cancel the job for real; 404 unknown or unreadable, 403 another's without the
    act-all gate, 409 ``job_finished``. Published on the ``jobs`` stream (audited)."""
    name, job = await find(ctx, job_id, principal)
    require_owner(
        principal,
        job.owner,
        read_all=GATE_READ_ALL,
        act_all=GATE_ACT_ALL,
        not_found=GatewayError(404, "job_not_found", f"no job {job_id!r}"),
        action="cancelling another principal's job",
    )
    if job.status in FINISHED:
        raise GatewayError(409, "job_finished", f"job {job_id} is already {job.status}")
    cancelled = await sources(ctx)[name].cancel(ctx, job.native_id, principal.name, reason)
    await ctx.hub.publish(
        JOBS_STREAM,
        "job.cancelled",
        {
            "job_id": job_id,
            "kind": job.kind,
            "owner": job.owner,
            "by": principal.name,
            "reason": reason,
            "audit": audit("job.cancel", job_id),
        },
    )
    return record(name, cancelled)


def audit(action: str, target: str | None, outcome: str = "succeeded") -> dict[str, Any]:
    """The ``audit`` field the audit plugin turns into an audit record."""
    return {"action": action, "target": target, "outcome": outcome, "reason_code": None}
