"""Schedules: 5-field cron in an IANA time zone, or a fixed interval. Their timing (the
next tick, the ticks due), their records as the routes show them, and whether one is
suspended (its owner can no longer sign in). Firing them is ``scheduler.py``'s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import croniter
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayContext, GatewayError, Principal, Store, owned_by
from plugins.pipelines.gates import GATE_READ_ALL
from plugins.pipelines.models import ScheduleRecord
from plugins.pipelines.tables import schedule_fires, schedules

FIRING = "firing"  # a fire's outcome while its tick is taken and its run not yet recorded


def next_after(cron: str | None, tz: str, interval: float | None, after_ms: int) -> int:
    """The first tick strictly after ``after_ms``."""
    if interval is not None:
        return after_ms + int(interval * 1000)
    zone = ZoneInfo(tz)
    base = datetime.fromtimestamp(after_ms / 1000, zone)
    nxt: datetime = croniter(cron, base).get_next(datetime)
    return int(nxt.timestamp() * 1000)


def due_ticks(row: Any, now: int) -> list[int]:
    """Ticks from ``next_fire_ms`` up to ``now`` (at most a bounded number)."""
    ticks: list[int] = []
    tick = int(row.next_fire_ms)
    while tick <= now and len(ticks) < 10_000:
        ticks.append(tick)
        tick = next_after(row.cron, row.timezone, row.interval_seconds, tick)
    return ticks


def suspended(gateway: GatewayContext, row: Any) -> str | None:
    """``owner_removed`` when the schedule's owner can no longer sign in, else None (also
    for schedules made before owners were recorded: they keep firing)."""
    if row.owner is not None and not gateway.auth.principal_exists(row.owner):
        return "owner_removed"
    return None


def idempotency_key(schedule_id: str, tick_ms: int) -> str:
    return f"schedule:{schedule_id}@{tick_ms}"


def next_due(recover_ms: int) -> sa.Select[Any]:
    """When a worker must look for due schedules next: the earliest ``next_fire_ms``, or
    the time a fire left ``firing`` is taken over (``recover_ms`` after it was recorded)."""
    firing = sa.select((schedule_fires.c.recorded_ms + recover_ms).label("due")).where(
        schedule_fires.c.outcome == FIRING
    )
    both = sa.select(schedules.c.next_fire_ms.label("due")).union_all(firing).subquery()
    return sa.select(sa.func.min(both.c.due))


def check_timing(cron: str | None, interval_seconds: float | None, timezone: str) -> None:
    """422 ``validation_failed`` (``details.param`` names the field) unless exactly one of
    ``cron`` (5 fields) and ``interval_seconds`` is given and ``timezone`` is known."""
    if (cron is None) == (interval_seconds is None):
        raise GatewayError(
            422,
            "validation_failed",
            "give exactly one of cron and interval_seconds",
            details={"param": "cron"},
        )
    if cron is not None and (len(cron.split()) != 5 or not croniter.is_valid(cron)):
        raise GatewayError(
            422,
            "validation_failed",
            "cron: not a valid 5-field cron expression",
            details={"param": "cron"},
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise GatewayError(
            422,
            "validation_failed",
            f"timezone: unknown IANA time zone {timezone!r}",
            details={"param": "timezone"},
        ) from None


def record(gateway: GatewayContext, row: Any) -> ScheduleRecord:
    return ScheduleRecord(**row._asdict(), suspended=suspended(gateway, row))


async def schedule_row(conn: AsyncConnection, schedule_id: str) -> Any:
    """The schedule's row, or None."""
    query = sa.select(schedules).where(schedules.c.id == schedule_id)
    return (await conn.execute(query)).first()


async def visible(conn: AsyncConnection, reader: Principal) -> list[Any]:
    """The rows of the schedules ``reader`` may read, oldest first."""
    query = (
        sa.select(schedules)
        .where(owned_by(schedules.c.owner, reader, GATE_READ_ALL))
        .order_by(schedules.c.created_ms)
    )
    return list((await conn.execute(query)).all())


async def insert(store: Store, values: dict[str, Any]) -> bool:
    """Store a new schedule; False when one with its id exists (nothing is written)."""
    async with store.write() as conn:
        inserted = await conn.execute(store.dialect.insert_ignore(schedules).values(**values))
    return bool(inserted.rowcount)


async def remove(store: Store, schedule_id: str) -> bool:
    """Remove a schedule (its runs go on); whether there was one."""
    async with store.write() as conn:
        result = await conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
    return bool(result.rowcount)
