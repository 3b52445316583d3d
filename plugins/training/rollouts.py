"""Rollout rows: writing them (a run's once, a conversation's turn after turn), reading
them (one, a page, the counts) and their feedback. Lists are filtered by ownership."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from host.api import GatewayError, Principal, Settings, Store, now_ms, owned_by
from plugins.training.gates import GATE_READ_ALL
from plugins.training.models import Feedback, Filters, RolloutList, RolloutQuery, RolloutRecord
from plugins.training.tables import rollouts as t


def new_id() -> str:
    return f"ro_{uuid.uuid4().hex[:24]}"


def not_found(rollout_id: str) -> GatewayError:
    return GatewayError(404, "rollout_not_found", f"no rollout {rollout_id!r}")


def record(row: Any) -> RolloutRecord:
    feedback = Feedback.model_validate(row.feedback) if row.feedback else None
    return RolloutRecord(
        id=row.id,
        source=row.source,
        run_id=row.run_id,
        pipeline_id=row.pipeline_id,
        response_id=row.response_id,
        session_key=row.session_key,
        model=row.model,
        outcome=row.outcome,
        owner=row.owner,
        created_by=row.created_by,
        messages=row.messages,
        tools=row.tools,
        details=row.details,
        turns=row.turns,
        redactions=row.redactions,
        reward=row.reward,
        feedback=feedback,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
    )


async def insert_once(store: Store, values: dict[str, Any]) -> bool:
    """Store a run's rollout unless its run has one already (a replayed event)."""
    async with store.write() as conn:
        done = await conn.execute(store.dialect.insert_ignore(t).values(**values))
    return bool(done.rowcount)


async def add_turn(store: Store, values: dict[str, Any], *, replace: bool = False) -> None:
    """Store a conversation's first turn, or append a later one to its rollout (with
    ``replace`` its messages replace the stored ones: a chat completion carries the whole
    conversation). The row is locked while it grows, so two replicas take turns."""
    source, key = values["source"], values["source_key"]
    where = sa.and_(t.c.source == source, t.c.source_key == key)
    async with store.write() as conn:
        for _ in range(2):
            row = (await conn.execute(store.dialect.lock(sa.select(t).where(where)))).first()
            if row is not None:
                details = dict(row.details)
                details["turns"] = [*details.get("turns", []), *values["details"]["turns"]]
                await conn.execute(
                    t.update()
                    .where(t.c.n == row.n)
                    .values(
                        messages=values["messages"]
                        if replace
                        else [*row.messages, *values["messages"]],
                        tools=values["tools"]
                        if replace
                        else _merged_tools(row.tools, values["tools"]),
                        details=details,
                        turns=row.turns + 1,
                        redactions=row.redactions + values["redactions"],
                        response_id=values["response_id"],
                        model=values["model"],
                        outcome=values["outcome"],
                        updated_ms=values["updated_ms"],
                    )
                )
                return
            created = await conn.execute(store.dialect.insert_ignore(t).values(**values))
            if created.rowcount:
                return


def _merged_tools(old: list[dict[str, Any]] | None, new: list[dict[str, Any]] | None) -> Any:
    tools = list(old or [])
    names = {tool["function"]["name"] for tool in tools}
    tools += [tool for tool in new or [] if tool["function"]["name"] not in names]
    return tools or None


def filtered(query: Filters, reader: Principal) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [owned_by(t.c.owner, reader, GATE_READ_ALL)]
    for name in ("source", "outcome", "model", "pipeline_id"):
        value = getattr(query, name)
        if value is not None:
            where.append(t.c[name] == value)
    if query.since_ms is not None:
        where.append(t.c.created_ms >= query.since_ms)
    if query.until_ms is not None:
        where.append(t.c.created_ms < query.until_ms)
    if query.min_reward is not None:
        where.append(t.c.reward >= query.min_reward)
    rated = sa.or_(t.c.reward.is_not(None), t.c.feedback.is_not(None))
    if query.has_feedback is True:
        where.append(rated)
    elif query.has_feedback is False:
        where.append(sa.and_(t.c.reward.is_(None), t.c.feedback.is_(None)))
    if query.label is not None:
        where.append(t.c.feedback.is_not(None))  # the label itself: label_matches
    return where


def label_matches(row: Any, label: str | None) -> bool:
    """A JSON field is not portably comparable in SQL: the label is checked on the row."""
    return label is None or bool(row.feedback and row.feedback.get("label") == label)


async def page(conn: AsyncConnection, query: RolloutQuery, reader: Principal) -> RolloutList:
    where = filtered(query, reader)
    for name in ("run_id", "response_id"):
        value = getattr(query, name)
        if value is not None:
            where.append(t.c[name] == value)
    found: list[Any] = []
    before = query.before
    # Label filtering happens on rows: read on until the page is full or nothing is left.
    while len(found) < query.limit:
        clause = [*where, t.c.n < before] if before is not None else where
        rows = (
            await conn.execute(
                sa.select(t).where(*clause).order_by(t.c.n.desc()).limit(query.limit)
            )
        ).all()
        if not rows:
            before = None
            break
        for row in rows:
            before = row.n
            if label_matches(row, query.label):
                found.append(row)
                if len(found) == query.limit:
                    break
        if len(rows) < query.limit and len(found) < query.limit:
            before = None
            break
    more = before if len(found) == query.limit else None
    return RolloutList(rollouts=[record(r) for r in found], next_before=more)


async def one(conn: AsyncConnection, rollout_id: str) -> Any:
    row = (await conn.execute(sa.select(t).where(t.c.id == rollout_id))).first()
    if row is None:
        raise not_found(rollout_id)
    return row


async def set_feedback(
    store: Store, rollout_id: str, reward: float | None, feedback: dict[str, Any] | None
) -> None:
    values: dict[str, Any] = {"updated_ms": now_ms()}
    if reward is not None:
        values["reward"] = reward
    if feedback is not None:
        values["feedback"] = feedback
    async with store.write() as conn:
        await conn.execute(t.update().where(t.c.id == rollout_id).values(**values))


async def counts(conn: AsyncConnection, reader: Principal) -> dict[str, Any]:
    visible = owned_by(t.c.owner, reader, GATE_READ_ALL)
    out: dict[str, Any] = {"total": 0, "by_outcome": {}, "by_source": {}}
    for column, key in ((t.c.outcome, "by_outcome"), (t.c.source, "by_source")):
        rows = await conn.execute(
            sa.select(column, sa.func.count()).where(visible).group_by(column)
        )
        out[key] = {value: int(n) for value, n in rows}
    out["total"] = sum(out["by_outcome"].values())
    rated = sa.or_(t.c.reward.is_not(None), t.c.feedback.is_not(None))
    out["with_feedback"] = int(
        (await conn.execute(sa.select(sa.func.count()).where(visible, rated))).scalar_one()
    )
    return out


async def batch_after(
    conn: AsyncConnection, where: Sequence[sa.ColumnElement[bool]], after: int, size: int
) -> list[Any]:
    """The next ``size`` rows after ``n = after``, oldest first (an export's pages)."""
    rows = await conn.execute(sa.select(t).where(*where, t.c.n > after).order_by(t.c.n).limit(size))
    return list(rows.all())


async def prune(
    store: Store, settings: Settings, max_age_days: float, now: int, dry_run: bool
) -> dict[str, int]:
    """Remove rollouts not updated for ``max_age_days`` (a conversation still growing is
    kept), in short transactions."""
    cutoff = settings.retention.cutoff_ms(max_age_days, now)
    if cutoff is None:
        return {"rollouts": 0}
    old = t.c.updated_ms < cutoff
    if dry_run:
        return {"rollouts": await store.count_where(t, old)}
    return {"rollouts": await store.delete_batched(t, old, [t.c.n], settings.retention.batch_size)}
