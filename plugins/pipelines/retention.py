"""Retention of the pipelines plugin (its ``gateway_prune``): finished runs, by age and by
count, with everything that belongs to them (step results, step journal, approvals, the
run's event stream), and the record of schedule ticks older than the runs kept.

A run that has not finished (pending, running, waiting, paused) is never removed, however
old. Removing a run also forgets its idempotency key: a request repeated with that key
after the run is gone starts a new run.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from host.api import Settings, Store
from plugins.pipelines.runs import TERMINAL, stream_of
from plugins.pipelines.tables import approvals, runs, schedule_fires, step_journal, step_results

KINDS = (
    "runs",
    "step_results",
    "step_journal",
    "approvals",
    "events",
    "schedule_fires",
    "schedule_ticks",
)


async def prune(store: Store, settings: Settings, now_ms: int, dry_run: bool) -> dict[str, int]:
    r = settings.retention
    counts = dict.fromkeys(KINDS, 0)
    cutoff = r.cutoff_ms(r.runs_max_age_days, now_ms)
    due = await _due_runs(store, cutoff, r.limit(r.runs_max_count))
    if due is not None:
        after = 0
        while True:
            async with store.read() as conn:
                rows = (
                    await conn.execute(
                        sa.select(runs.c.n, runs.c.id)
                        .where(due, runs.c.n > after)
                        .order_by(runs.c.n)
                        .limit(r.batch_size)
                    )
                ).all()
            if not rows:
                break
            await _remove_runs(store, [row.id for row in rows], r.batch_size, dry_run, counts)
            after = rows[-1].n
            if len(rows) < r.batch_size:
                break
    if cutoff is not None:
        old_fires = schedule_fires.c.recorded_ms < cutoff
        fire_key = [schedule_fires.c.schedule_id, schedule_fires.c.tick_ms]
        counts["schedule_fires"] = (
            await store.count_where(schedule_fires, old_fires)
            if dry_run
            else await store.delete_batched(schedule_fires, old_fires, fire_key, r.batch_size)
        )
        counts["schedule_ticks"] = await store.prune_once_keys(
            "tick", cutoff, r.batch_size, dry_run
        )
    return counts


async def _due_runs(
    store: Store, cutoff: int | None, keep: int | None
) -> sa.ColumnElement[bool] | None:
    """Which runs go: finished, and finished before ``cutoff`` or older than the newest
    ``keep`` finished runs. None: no rule applies."""
    finished = runs.c.status.in_(TERMINAL)
    rules: list[sa.ColumnElement[bool]] = []
    if cutoff is not None:
        rules.append(sa.func.coalesce(runs.c.finished_ms, runs.c.updated_ms) < cutoff)
    if keep is not None:
        async with store.read() as conn:
            newest_dropped = (
                await conn.execute(
                    sa.select(runs.c.n)
                    .where(finished)
                    .order_by(runs.c.n.desc())
                    .limit(1)
                    .offset(keep)
                )
            ).scalar()
        if newest_dropped is not None:
            rules.append(runs.c.n <= newest_dropped)
    return sa.and_(finished, sa.or_(*rules)) if rules else None


async def _remove_runs(
    store: Store, ids: list[str], batch_size: int, dry_run: bool, counts: dict[str, int]
) -> None:
    """The runs ``ids`` and what belongs to them; the run rows last, so that a prune cut
    short leaves runs that the next one finishes removing, never orphans."""
    counts["events"] += await store.delete_streams([stream_of(i) for i in ids], batch_size, dry_run)
    children: list[tuple[str, sa.Table, list[Any]]] = [
        ("step_journal", step_journal, [step_journal.c.run_id, step_journal.c.path]),
        ("step_results", step_results, [step_results.c.n]),
        ("approvals", approvals, [approvals.c.run_id, approvals.c.step_id]),
    ]
    for kind, table, keys in children:
        mine = table.c.run_id.in_(ids)
        counts[kind] += (
            await store.count_where(table, mine)
            if dry_run
            else await store.delete_batched(table, mine, keys, batch_size)
        )
    if dry_run:
        counts["runs"] += len(ids)
        return
    async with store.write() as conn:
        gone = await conn.execute(
            runs.delete().where(runs.c.id.in_(ids), runs.c.status.in_(TERMINAL))
        )
    counts["runs"] += int(gone.rowcount)
