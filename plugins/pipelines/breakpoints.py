"""Debug breakpoints: a stored step id or step path before which every run pauses
(optionally of one pipeline only). The routes add, list and remove them; the engine asks
``hit`` before each step that has not started yet."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import Principal, Store, owned_by
from plugins.pipelines.gates import GATE_READ_ALL
from plugins.pipelines.models import Breakpoint, BreakpointList
from plugins.pipelines.tables import breakpoints


async def hit(store: Store, pipeline_id: str, step_id: str, path: str) -> str | None:
    """The breakpoint (its ``step_id``) that names this step by id or by path."""
    async with store.read() as conn:
        row = (
            await conn.execute(
                sa.select(breakpoints.c.step_id)
                .where(
                    breakpoints.c.step_id.in_({step_id, path}),
                    sa.or_(
                        breakpoints.c.pipeline_id.is_(None),
                        breakpoints.c.pipeline_id == pipeline_id,
                    ),
                )
                .limit(1)
            )
        ).first()
    return None if row is None else str(row.step_id)


async def visible(conn: AsyncConnection, reader: Principal) -> BreakpointList:
    """The breakpoints ``reader`` may read, oldest first."""
    stmt = (
        sa.select(breakpoints)
        .where(owned_by(breakpoints.c.owner, reader, GATE_READ_ALL))
        .order_by(breakpoints.c.created_ms)
    )
    rows = (await conn.execute(stmt)).all()
    return BreakpointList(breakpoints=[Breakpoint(**r._asdict()) for r in rows])


async def put(store: Store, values: dict[str, Any]) -> Breakpoint:
    """Store a breakpoint (replacing the one on the same step)."""
    async with store.write() as conn:
        await conn.execute(store.dialect.upsert(breakpoints, ["step_id"], values))
    return Breakpoint(**values)


async def remove(store: Store, step_id: str) -> bool:
    """Remove the breakpoint on ``step_id``; whether there was one."""
    async with store.write() as conn:
        result = await conn.execute(breakpoints.delete().where(breakpoints.c.step_id == step_id))
    return bool(result.rowcount)
